"""A run's photos: recognised by their bytes where their names say nothing, each under a name unique
in the run, and whatever a folder holds besides named in one line."""

from __future__ import annotations

import pytest
from photo_encodings import CONTAINERS, ENCODINGS

from dgla_export.data import Photos, distinct, file_names, find_photos, load_images, submission_keys, unique_names
from dgla_export.preprocess import ImageError


def test_every_encoding_is_a_photo_by_its_bytes_without_an_extension(images, tmp_path) -> None:
    rgb = images[0][1][:96, :128]
    for name, encode in {**ENCODINGS, **CONTAINERS}.items():
        (tmp_path / name).write_bytes(encode(rgb))  # as a PACS export names them: no extension
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.zeros(2)}, tmp_path / "ckpt.pt")
    (tmp_path / "notes.txt").write_text("MRN 12345, seen 2026-12-01\n")
    (tmp_path / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(200))
    (tmp_path / "bmi").write_text("BMI 23, follow-up in 3 months\n" * 8)  # "BM" alone is no bitmap
    (tmp_path / "skin.dng").write_bytes(ENCODINGS["tiff"](rgb))  # a camera's raw file: TIFF bytes, not a photo here
    (tmp_path / "old").mkdir()
    photos = find_photos([tmp_path])
    expected = sorted({*ENCODINGS, *CONTAINERS})
    print(f"{len(photos.files)} photos found by their bytes, skipped: {photos.skipped}")
    assert [f.name for f in photos.files] == expected
    assert photos.skipped == ("Thumbs.db", "bmi", "ckpt.pt", "notes.txt", "old/ (a folder)", "skin.dng")
    assert photos.skipped_line() == (
        "skipped 6 files that are not images: Thumbs.db, bmi, ckpt.pt, notes.txt, old/ (a folder), skin.dng"
    )
    assert photos.skipped_line(named=False) == "skipped 6 files that are not images"  # --anonymise


def test_a_file_with_an_image_extension_is_read_whatever_its_bytes(tmp_path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")  # its error is for the decoder to say, not a skip
    (tmp_path / "notes.txt").write_text("x")
    photos = find_photos([tmp_path])
    assert [f.name for f in photos.files] == ["broken.jpg"] and photos.skipped == ("notes.txt",)
    assert find_photos([tmp_path / "notes.txt"]).files == (tmp_path / "notes.txt",)  # named: read, and failed
    with pytest.raises(ImageError, match=r"holds no images .*\(only notes.txt\)"):
        find_photos([_folder_with(tmp_path / "empty", "notes.txt")])
    with pytest.raises(ImageError, match="does not exist"):
        find_photos([tmp_path / "absent"])


def _folder_with(folder, *names):
    folder.mkdir()
    for name in names:
        (folder / name).write_text("x")
    return folder


def test_names_are_unique_in_the_run(tmp_path) -> None:
    a, b = tmp_path / "clinic" / "a", tmp_path / "clinic" / "b"
    files = [a / "IMG_0001.JPG", a / "IMG_0001.HEIC", b / "IMG_0001.JPG", a / "IMG_0001.JPG"]
    assert unique_names(files) == ["a/IMG_0001.JPG", "IMG_0001.HEIC", "b/IMG_0001.JPG", "a/IMG_0001.JPG#2"]
    assert distinct(["img-1", "img-2", "img-1"]) == ["img-1", "img-2", "img-1#2"]
    # the prediction CSV's key: ISIC's (no extension) unless two photos share it, and never one twice
    assert submission_keys(["ISIC_0024306.jpg", "skin.jpg", "skin.png"]) == ["ISIC_0024306", "skin.jpg", "skin.png"]
    assert submission_keys(["skin.jpg", "skin.png", "skin.jpg.png"]) == ["skin.jpg", "skin.png", "skin.jpg#2"]
    # one folder's file names: flattened folders and letter case (macOS, Windows) never name one file twice
    names = ["a/x.jpg", "b/x.jpg", "a__x.jpg", "a/IMG_1.JPG", "b/img_1.jpg"]
    assert file_names(names) == ["a__x.jpg", "b__x.jpg", "a__x.jpg#2", "a__IMG_1.JPG", "b__img_1.jpg"]
    assert file_names(["IMG_1.JPG", "img_1.jpg", "/x.jpg"]) == ["IMG_1.JPG", "img_1.jpg#2", "x.jpg"]


def test_a_folder_of_two_photos_of_one_name_loads_both_under_their_own(images, tmp_path) -> None:
    from PIL import Image

    Image.fromarray(images[0][1]).save(tmp_path / "skin.jpg")
    Image.fromarray(images[1][1]).save(tmp_path / "skin.png")
    (tmp_path / "notes.txt").write_text("x")
    heard: list[str] = []
    loaded = load_images(tmp_path, warn=heard.append)
    assert [name for name, _ in loaded] == ["skin.jpg", "skin.png"]
    assert heard == [f"{tmp_path}: skipped 1 file that is not an image: notes.txt"]
    assert Photos((), ()).skipped_line() is None
