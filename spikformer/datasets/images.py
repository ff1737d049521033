"""Images as the official evaluation sees them: PIL decoding as torchvision's ImageFolder, the eval transform of
timm 0.5.4 (`transforms_imagenet_eval`, which the official cifar10/ and imagenet/ training use through timm's
create_loader) built from torchvision's own transforms, and the 8-bit result as raw values pixel / 255.

timm with its prefetcher ends the eval transform with ToNumpy (uint8) and normalises on the GPU; here the uint8
tensor is divided by 255 in float32 (as ToTensor does) and the model normalises (Spikformer.normalize_input):
x * 255 is the 8-bit pixel exactly. See docs/data.md, "Images".
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from ..data_config import DataConfig
from .base import BadSampleError

PIXEL_MAX = 255
MODES = {1: "L", 3: "RGB"}


def pil_mode(in_channels: int, where: str) -> str:
    if in_channels not in MODES:
        raise BadSampleError(f"{where}: images give 1 or 3 channels, the model takes {in_channels}")
    return MODES[in_channels]


def eval_transform(img_size: int, data_config: DataConfig) -> transforms.Compose:
    """timm 0.5.4 transforms_imagenet_eval(img_size, crop_pct, interpolation) up to its ToNumpy: Resize of the
    shorter side to floor(img_size / crop_pct), then CenterCrop(img_size). torchvision's Resize returns a PIL
    image whose shorter side already has that size unchanged (so 32x32 CIFAR at img_size 32 is untouched)."""
    scale_size = int(math.floor(img_size / data_config.crop_pct))
    mode = transforms.InterpolationMode(data_config.interpolation)
    return transforms.Compose([transforms.Resize(scale_size, interpolation=mode), transforms.CenterCrop(img_size)])


def describe_transform(img_size: int, data_config: DataConfig) -> str:
    scale_size = int(math.floor(img_size / data_config.crop_pct))
    return (f"Resize(shorter side {scale_size}, {data_config.interpolation}) + CenterCrop({img_size}) "
            f"(timm 0.5.4 transforms_imagenet_eval, crop_pct {data_config.crop_pct}), uint8 / 255")


def to_raw(img: Image.Image) -> torch.Tensor:
    """A PIL image (L or RGB) -> float32 [C, H, W] of pixel / 255."""
    u = transforms.functional.pil_to_tensor(img)
    return u.to(torch.float32).div_(PIXEL_MAX)


def open_image(path, mode: str, where: str) -> Image.Image:
    """The decoded image as torchvision's pil_loader gives it (convert('RGB')), then `mode`. Refuses images of
    more than PIL's MAX_IMAGE_PIXELS (PIL only warns between once and twice that) and every decoding error,
    with one line naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open(path, "rb") as f:
                img = Image.open(f)
                limit = Image.MAX_IMAGE_PIXELS
                if limit is not None and img.width * img.height > limit:
                    raise BadSampleError(f"image {where} has {img.width}x{img.height} pixels, more than PIL's "
                                         f"MAX_IMAGE_PIXELS {limit} (a decompression bomb?); refused")
                img = img.convert("RGB")
        return img if mode == "RGB" else img.convert(mode)
    except BadSampleError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadSampleError(f"image {where} refused: {_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise BadSampleError(f"cannot decode image {where}: {type(e).__name__}: {_line(e)}") from None


def array_image(chw: np.ndarray, mode: str) -> Image.Image:
    """uint8 [C, H, W] (C 1 or 3) -> a PIL image in `mode`, as torchvision's CIFAR10 makes it (Image.fromarray
    of the HWC array)."""
    img = Image.fromarray(np.ascontiguousarray(chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0)))
    return img if img.mode == mode else img.convert(mode)


def _line(e) -> str:
    return " ".join(str(e).split()) or type(e).__name__
