"""A 16-bit image at the pixel limit is scaled to 8 bits in about a byte per pixel, exactly as rounding says."""

from __future__ import annotations

import tracemalloc

import numpy as np
from PIL import Image

from mfef_keras.data.image_files import load_image


def test_every_sixteen_bit_value_rounds_to_the_nearest_eight_bit_one(tmp_path):
    values = np.arange(1 << 16, dtype=np.uint16).reshape(256, 256)
    Image.fromarray(values).save(tmp_path / "all.png")
    image = load_image(tmp_path / "all.png")
    assert image.mode == "L"
    np.testing.assert_array_equal(np.asarray(image), np.rint(values * (255.0 / 65535.0)).astype(np.uint8))


def test_scaling_a_sixteen_bit_image_allocates_no_float_copies(tmp_path):
    side = 2048
    values = np.random.default_rng(0).integers(0, 1 << 16, (side, side), dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "big.png", compress_level=1)
    tracemalloc.start()
    try:
        load_image(tmp_path / "big.png")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # numpy's allocations are traced: the 16-bit values (copied once from PIL) and the 8-bit result are 4 to 5
    # bytes a pixel; float64 arithmetic took 24 and more (1.7 GB at 8192x8192).
    assert peak < 6 * side * side, f"{peak / side / side:.1f} bytes per pixel"
