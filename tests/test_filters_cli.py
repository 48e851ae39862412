"""Named image filters and the ``fastconv`` command line."""
import subprocess
import sys

import numpy as np
import pytest

import fastconv.filters as ff
from fastconv.cli import main
from fastconv.testing import assert_close


def test_seed_kernels_are_the_notes_values():
    assert ff.kernel("box").sum() == pytest.approx(1.0)
    assert ff.kernel("sharpen").sum() == 1.0 and ff.kernel("sharpen")[1, 1] == 5
    assert ff.kernel("gaussian")[2, 2] == 0.6187 and ff.kernel("gaussian").shape == (5, 5)
    assert ff.kernel("motion")[2, 2] == 0.1771 and ff.kernel("motion")[0, 0] == 0.0304
    np.testing.assert_array_equal(ff.kernel("horizontal_edge"), -ff.kernel("horizontal_edge")[::-1])
    np.testing.assert_array_equal(ff.kernel("vertical_edge"), ff.kernel("horizontal_edge").T)
    with pytest.raises(ValueError, match="unknown filter 'blur'"):
        ff.kernel("blur")


@pytest.mark.parametrize("name", sorted(ff.KERNELS))
def test_filter_matches_scipy_correlate(name, rng):
    ndimage = pytest.importorskip("scipy.ndimage")
    image = rng.random((17, 23))
    k = ff.kernel(name)
    # scipy's 'mirror' is PyTorch's 'reflect'; an even kernel puts its extra tap at the end
    origin = [-1 if s % 2 == 0 else 0 for s in k.shape]
    expect = ndimage.correlate(image, k, mode="mirror", origin=origin)
    assert_close(ff.apply(image, name, dtype=np.float64), expect, "float64", name)


def test_color_images_are_filtered_per_channel(rng):
    image = (rng.random((12, 10, 3)) * 255).astype(np.uint8)
    out = ff.apply(image, "gaussian")
    assert out.shape == image.shape and out.dtype == np.float32
    for c in range(3):
        np.testing.assert_allclose(out[..., c], ff.apply(image[..., c], "gaussian"), rtol=1e-6)


def test_sobel_is_gradient_magnitude(rng):
    image = rng.random((9, 9))
    gx, gy = ff.apply(image, "sobel_x"), ff.apply(image, "sobel_y")
    np.testing.assert_allclose(ff.apply(image, "sobel"), np.hypot(gx, gy), rtol=1e-6)
    ramp = np.tile(np.arange(8.0), (8, 1))  # constant horizontal gradient of 1 per pixel
    assert np.allclose(ff.apply(ramp, "sobel_x", dtype=np.float64)[1:-1, 1:-1], 8.0)


def test_box_filter_keeps_constant_image():
    assert np.allclose(ff.apply(np.full((6, 7), 3.0), "box"), 3.0)


def test_cli_info_lists_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "fastconv" in out and "numpy" in out and "available" in out


def test_cli_filter_on_a_real_png(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    y, x = np.mgrid[0:40, 0:50]
    img = np.zeros((40, 50), np.uint8)
    img[10:30, 15:35] = 200  # a bright square: its edges must light up under Sobel
    Image.fromarray(img).save(tmp_path / "in.png")
    for name in ("sobel", "gaussian"):
        out = tmp_path / f"{name}.png"
        run = subprocess.run([sys.executable, "-m", "fastconv", "filter", str(tmp_path / "in.png"),
                              str(out), "--filter", name], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        res = np.asarray(Image.open(out))
        assert res.shape == img.shape and res.dtype == np.uint8
    edges = np.asarray(Image.open(tmp_path / "sobel.png"))
    assert edges[10, 25] > 100 and edges[20, 25] == 0 and edges[0, 0] == 0


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["filter", str(tmp_path / "missing.png"), str(tmp_path / "o.png"),
                 "--filter", "box"]) == 1
    assert "error" in capsys.readouterr().err


def test_readme_backends_table_is_the_registry():
    """README's ops x backends table is `fastconv info --markdown` (regenerate it if this fails)."""
    from pathlib import Path

    from fastconv.cli import markdown_table
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert markdown_table() in readme
