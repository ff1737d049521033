"""What every data reader shares (spikformer.data, spikformer.events, spikformer.npy_header, spikformer.datasets):
the error of a data set that cannot be used, and the seeded stratified 80/20 split."""
from __future__ import annotations

import numpy as np

from ground.errors import UserError

TEST_FRACTION = 0.2


class DataError(UserError):
    """A data spec that cannot be used (unknown kind, missing file, wrong arrays)."""


def stratified_split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices of a seeded 80/20 split of labels `y`, stratified when every class has at least
    two samples (scikit-learn's train_test_split)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    counts = np.bincount(y) if len(y) else np.zeros(0, dtype=np.int64)
    stratify = y if len(counts[counts > 0]) > 1 and counts[counts > 0].min() >= 2 else None
    try:
        tr, te = train_test_split(idx, test_size=TEST_FRACTION, random_state=seed, shuffle=True, stratify=stratify)
    except ValueError as e:  # too few samples for the split
        raise DataError(f"cannot split {len(y)} samples 80/20: {e}") from None
    return np.sort(tr), np.sort(te)
