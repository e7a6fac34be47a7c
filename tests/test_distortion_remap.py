"""remap_bilinear (torch grid_sample) against an independent numpy bilinear sampler."""

import numpy as np
import pytest

from megohand.data.sources.distortion import remap_bilinear


def numpy_bilinear(image, xy, fill=0.0):
    """Reference: the four neighbours gathered by hand, float64; outside the interior cells -> fill."""
    H, W = image.shape[:2]
    x, y = xy[..., 0].astype(np.float64), xy[..., 1].astype(np.float64)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    inside = (x0 >= 0) & (y0 >= 0) & (x0 < W - 1) & (y0 < H - 1)
    x0c, y0c = np.clip(x0, 0, W - 2), np.clip(y0, 0, H - 2)
    fx, fy = x - x0, y - y0
    img = image.astype(np.float64)
    if img.ndim == 3:
        fx, fy, inside = fx[..., None], fy[..., None], inside[..., None]
    top = img[y0c, x0c] * (1 - fx) + img[y0c, x0c + 1] * fx
    bot = img[y0c + 1, x0c] * (1 - fx) + img[y0c + 1, x0c + 1] * fx
    return np.where(inside, top * (1 - fy) + bot * fy, fill)


@pytest.mark.parametrize("dtype,shape", [(np.uint8, (37, 53, 3)), (np.uint16, (37, 53)), (np.float32, (37, 53, 2))])
def test_matches_numpy_reference(dtype, shape):
    rng = np.random.default_rng(0)
    img = (rng.uniform(0, 60000 if dtype == np.uint16 else 255, shape)).astype(dtype)
    xy = np.stack([rng.uniform(-3, shape[1] + 2, (29, 41)), rng.uniform(-3, shape[0] + 2, (29, 41))], -1)
    out = remap_bilinear(img, xy.astype(np.float32), fill=7)
    ref = numpy_bilinear(img, xy.astype(np.float32), fill=7)
    assert out.dtype == img.dtype and out.shape == xy.shape[:2] + shape[2:]
    tol = 1e-3 * (1 + np.abs(ref)) if dtype == np.float32 else 1.0  # integers: rounding only
    assert np.all(np.abs(out.astype(np.float64) - ref) <= tol)
    outside = (xy[..., 0] < 0) | (xy[..., 1] < 0) | (xy[..., 0] >= shape[1] - 1) | (xy[..., 1] >= shape[0] - 1)
    assert outside.any() and np.all(out[outside] == 7)


def test_integer_positions_are_exact():
    img = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    v, u = np.meshgrid(np.arange(4, dtype=np.float32), np.arange(5, dtype=np.float32), indexing="ij")
    out = remap_bilinear(img, np.stack([u, v], -1))
    assert np.array_equal(out, img[:4, :5])
