"""Robust image reading on files built from a real photo in every awkward format a user may have."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

import sensitivity.images as images_module
from sensitivity.images import ImageReadError, image_size, read_image

RED = (255, 0, 0)


@pytest.fixture(scope="module")
def photo(demo_image_paths) -> Image.Image:
    """A small real RGB photo (96×64), non-square so rotations show."""
    with Image.open(demo_image_paths[0]) as image:
        return image.convert("RGB").resize((96, 64))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int32)


def test_plain_jpeg_reads_as_rgb(demo_image_paths):
    path = demo_image_paths[0]
    image = read_image(str(path))  # str paths work too
    assert image.mode == "RGB"
    with Image.open(path) as reference:
        assert image.size == reference.size == image_size(path)
        assert np.array_equal(pixels(image), pixels(reference.convert("RGB")))


def test_grayscale(photo, tmp_path):
    gray = photo.convert("L")
    path = tmp_path / "gray.png"
    gray.save(path)
    image = read_image(path)
    assert image.mode == "RGB" and image.size == photo.size
    for channel in range(3):
        assert np.array_equal(pixels(image)[..., channel], pixels(gray))


def test_cmyk_jpeg(photo, tmp_path):
    path = tmp_path / "cmyk.jpg"
    photo.convert("CMYK").save(path, quality=95)
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    image = read_image(path)
    assert image.mode == "RGB" and image.size == photo.size
    difference = np.abs(pixels(image) - pixels(photo)).mean()
    assert difference < 8, f"mean absolute difference {difference:.1f} (inverted or wrong colours?)"


def test_rgba_png_is_composited_on_white(photo, tmp_path):
    rgba = photo.convert("RGBA")
    alpha = np.full((64, 96), 255, dtype=np.uint8)
    alpha[:, :32] = 0  # fully transparent → white
    alpha[:, 32:48] = 128  # half transparent → blended with white
    rgba.putalpha(Image.fromarray(alpha))
    path = tmp_path / "rgba.png"
    rgba.save(path)
    image = pixels(read_image(path))
    original = pixels(photo)
    assert np.all(image[:, :32] == 255)
    blended = (original[:, 32:48] * 128 + 255 * 127) / 255
    assert np.abs(image[:, 32:48] - blended).max() <= 1.5
    assert np.array_equal(image[:, 48:], original[:, 48:])


def test_la_png_is_composited_on_white(photo, tmp_path):
    la = photo.convert("LA")
    alpha = np.full((64, 96), 255, dtype=np.uint8)
    alpha[:10] = 0
    la.putalpha(Image.fromarray(alpha))
    path = tmp_path / "la.png"
    la.save(path)
    image = pixels(read_image(path))
    assert np.all(image[:10] == 255)
    assert np.array_equal(image[10:, :, 0], pixels(photo.convert("L"))[10:])


def test_palette_png(photo, tmp_path):
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    path = tmp_path / "palette.png"
    palette.save(path)
    with Image.open(path) as raw:
        assert raw.mode == "P"
    image = read_image(path)
    assert image.mode == "RGB"
    assert np.array_equal(pixels(image), pixels(palette.convert("RGB")))


def test_palette_png_with_transparent_index_becomes_white(photo, tmp_path):
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    indices = np.asarray(palette)
    transparent = int(indices[0, 0])
    path = tmp_path / "palette_transparent.png"
    palette.save(path, transparency=transparent)
    image = pixels(read_image(path))
    assert np.all(image[indices == transparent] == 255)
    opaque = indices != transparent
    assert np.array_equal(image[opaque], pixels(palette.convert("RGB"))[opaque])


def test_sixteen_bit_grayscale_is_scaled_not_clipped(photo, tmp_path):
    gray = np.asarray(photo.convert("L"), dtype=np.uint16)
    deep = gray * 257  # 8-bit v ↔ 16-bit 257·v
    deep[0, 0], deep[0, 1], deep[0, 2] = 65535, 32768, 0
    source = Image.fromarray(deep)
    assert source.mode == "I;16"
    path = tmp_path / "deep.png"
    source.save(path)
    image = pixels(read_image(path))
    assert image.shape == (64, 96, 3)
    assert tuple(image[0, 0]) == (255, 255, 255)
    assert abs(int(image[0, 1, 0]) - 128) <= 1  # half scale, not clipped to 255
    assert tuple(image[0, 2]) == (0, 0, 0)
    assert np.abs(image[1:, :, 0] - gray[1:].astype(np.int32)).max() <= 1
    assert len(np.unique(image[..., 0])) > 50  # a real photo, not a saturated mask


def test_exif_rotated_jpeg(photo, tmp_path):
    marked = photo.copy()
    marked.paste(RED, (0, 0, 24, 16))  # top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    marked.save(path, exif=exif, quality=95)
    image = read_image(path)
    assert image.size == (64, 96) == image_size(path)
    corner = pixels(image)[:12, -12:]  # displayed top-right corner
    assert corner[..., 0].mean() > 200 and corner[..., 1:].mean() < 60
    with Image.open(path) as raw:
        assert raw.size == (96, 64)


def test_exif_rotation_with_max_side(photo, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "big_rotated.jpg"
    photo.resize((2000, 1500)).save(path, exif=exif)
    image = read_image(path, max_side=300)
    assert image.width < image.height and min(image.size) >= 300 and max(image.size) < 2000
    assert image_size(path) == (1500, 2000)


# --- errors ----------------------------------------------------------------------------------------


def test_truncated_jpeg(demo_image_paths, tmp_path):
    data = demo_image_paths[0].read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated") as error:
        read_image(path)
    assert str(path) in str(error.value) and error.value.path == str(path)
    assert isinstance(error.value, OSError)


def test_truncated_shared_photo(shared_data):
    path = shared_data / "kangaroo" / "images" / "00090.jpg"
    with pytest.raises(ImageReadError, match="00090.jpg"):
        read_image(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(ImageReadError, match="empty") as error:
        read_image(path)
    assert str(path) in str(error.value)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.jpg"
    with pytest.raises(ImageReadError, match="not found") as error:
        read_image(path)
    assert str(path) in str(error.value) and error.value.reason == "file not found"
    with pytest.raises(ImageReadError, match="not found"):
        image_size(path)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image at all\n")
    with pytest.raises(ImageReadError, match="notes.jpg"):
        read_image(path)
    with pytest.raises(ImageReadError, match="notes.jpg"):
        image_size(path)


def test_image_above_max_pixels(photo, tmp_path):
    path = tmp_path / "big.png"
    photo.save(path)
    assert read_image(path, max_pixels=96 * 64).size == (96, 64)
    with pytest.raises(ImageReadError, match="pixel") as error:
        read_image(path, max_pixels=96 * 64 - 1)
    assert str(error.value) == (f"{path}: image is 96x64 = 6144 pixels, above the limit of 6143 "
                                "(max_pixels, --max-pixels)")


def test_our_pixel_limit_counts_not_pils(photo, tmp_path, monkeypatch):
    """PIL's own bomb limit (here far below the image: PIL alone would refuse it) does not apply to images read
    here, and it is the same after reading as before."""
    path = tmp_path / "bomb.png"
    photo.save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert read_image(path).size == (96, 64) and image_size(path) == (96, 64)
    assert Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(ImageReadError, match="limit of 6000"):
        read_image(path, max_pixels=6000)
    assert Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(Image.DecompressionBombError), Image.open(path):  # PIL's limit, outside this module
        pass


def test_108_megapixel_photo_is_read(tmp_path):
    """A 12000x9000 photo (above PIL's default 89 MP limit, below MAX_PIXELS) reads without a warning, decoded
    at reduced size as localize reads it; its header gives the full size."""
    path = tmp_path / "108mp.jpg"
    Image.new("L", (12000, 9000), 128).save(path, quality=50)  # 1.3 MB on disk
    assert images_module.MAX_PIXELS > 12000 * 9000 > Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert image_size(path) == (12000, 9000)
        assert read_image(path, max_side=448).size == (1500, 1125)


# --- reduced-size decoding -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_jpeg(photo, tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    photo.resize((2000, 1500), Image.Resampling.BILINEAR).save(path, quality=90)
    return path


@pytest.mark.parametrize("max_side", [224, 300, 512])
def test_max_side_decodes_a_big_jpeg_at_reduced_size(big_jpeg, max_side):
    image = read_image(big_jpeg, max_side=max_side)
    width, height = image.size
    assert min(width, height) >= max_side
    assert width < 2000 and height < 1500  # actually reduced
    assert width / height == pytest.approx(2000 / 1500, rel=0.01)
    assert image.mode == "RGB"


def test_max_side_keeps_the_content(big_jpeg):
    full = read_image(big_jpeg)
    assert full.size == (2000, 1500)
    reduced = read_image(big_jpeg, max_side=300)
    difference = np.abs(pixels(full.resize(reduced.size, Image.Resampling.BOX)) - pixels(reduced)).mean()
    assert difference < 6


def test_max_side_above_the_image_size_and_on_png(photo, big_jpeg, tmp_path):
    assert read_image(big_jpeg, max_side=4000).size == (2000, 1500)
    path = tmp_path / "big.png"
    photo.resize((800, 600)).save(path)
    assert read_image(path, max_side=100).size == (800, 600)  # only JPEG decoding can be reduced
