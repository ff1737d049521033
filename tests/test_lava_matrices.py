"""The Lava weight matrices built from a convolution's structure (lava_matrices.conv_matrix) equal those built by
running the IR kernel on unit inputs, for strides, paddings, groups, Conv1d, and zero taps, and sum pools as
depthwise convolutions; the build-size limit counts a convolution's synapses, not its dense matrix."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from convert import ir, kernels
from hw_backends.loihi.lava_conventions import LavaGraphError
from hw_backends.loihi.lava_matrices import build_size, conv_matrix, sum_pool_as_conv


def _by_kernel(node, in_shape) -> np.ndarray:
    n_pre = math.prod(in_shape)
    eye = torch.eye(n_pre, dtype=torch.float64).reshape(n_pre, *in_shape)
    y = kernels.step(node, {"in": eye}, {}, kernels.ParamCache(), 0)
    return y.reshape(n_pre, -1).numpy().T  # (post, pre)


CONV2D = [  # cin, cout, h, w, k, stride, padding, groups
    (3, 4, 7, 6, 3, (1, 1), (1, 1), 1),
    (4, 6, 8, 8, 3, (2, 2), (1, 1), 2),
    (2, 3, 5, 9, (1, 3), (1, 2), (0, 1), 1),
    (4, 4, 6, 6, 1, (1, 1), (0, 0), 4),
    (3, 5, 9, 9, 5, (3, 2), (2, 0), 1),
]


@pytest.mark.parametrize("cin,cout,h,w,k,stride,padding,groups", CONV2D)
def test_conv2d_matrix_equals_the_kernel_on_unit_inputs(cin, cout, h, w, k, stride, padding, groups):
    rng = np.random.default_rng(cin * 100 + cout)
    kh, kw = (k, k) if isinstance(k, int) else k
    wt = rng.integers(-5, 6, size=(cout, cin // groups, kh, kw)).astype(np.float64)
    wt[rng.random(wt.shape) < 0.3] = 0  # zero taps are not synapses
    node = ir.Conv2d(name="c", weight=wt, stride=stride, padding=padding, groups=groups)
    out_shape = node.out_shape({"in": (cin, h, w)})
    m = conv_matrix(node, (cin, h, w), out_shape)
    dense = _by_kernel(node, (cin, h, w))
    np.testing.assert_array_equal(m.toarray(), dense)
    assert m.nnz == np.count_nonzero(dense)  # no stored zeros


def test_conv1d_matrix_equals_the_kernel_on_unit_inputs():
    rng = np.random.default_rng(1)
    wt = rng.integers(-3, 4, size=(6, 2, 3)).astype(np.float64)
    node = ir.Conv1d(name="c1", weight=wt, stride=2, padding=1, groups=2)
    out_shape = node.out_shape({"in": (4, 9)})
    np.testing.assert_array_equal(conv_matrix(node, (4, 9), out_shape).toarray(), _by_kernel(node, (4, 9)))


def test_conv_matrix_refuses_unquantised_weights():
    node = ir.Conv2d(name="frac", weight=np.full((1, 1, 1, 1), 0.5))
    with pytest.raises(LavaGraphError, match="frac: weights are not integer"):
        conv_matrix(node, (1, 2, 2), (1, 2, 2))


def test_build_size_of_a_conv_counts_its_synapses():
    wt = np.zeros((8, 4, 3, 3))
    wt[:, :, 1, 1] = 1  # 32 nonzero taps
    node = ir.Conv2d(name="c", weight=wt, padding=(1, 1))
    n, what = build_size(node, 4 * 16 * 16, 8 * 16 * 16)
    assert n == 32 * 256 and "synapses" in what
    pool = ir.SumPool2d(name="p", kernel=(2, 2), stride=(2, 2))
    assert build_size(pool, 100, 25)[0] == 100


@pytest.mark.parametrize("kernel,stride,padding", [((3, 3), (2, 2), (1, 1)), ((2, 2), (2, 2), (0, 0)),
                                                   ((4, 4), (4, 4), (0, 0)), ((3, 2), (1, 2), (1, 0))])
def test_sum_pool_matrix_equals_the_kernel_on_unit_inputs(kernel, stride, padding):
    node = ir.SumPool2d(name="p", kernel=kernel, stride=stride, padding=padding, weight=3.0)
    in_shape = (3, 8, 7)
    out_shape = node.out_shape({"in": in_shape})
    m = conv_matrix(sum_pool_as_conv(node, 3), in_shape, out_shape)
    np.testing.assert_array_equal(m.toarray(), _by_kernel(node, in_shape))
