"""Manifest readers: kinds, audio lookup, per-item skips, and file:line errors."""

import json

import pytest

from jaxstage.data.manifests import ManifestError, detect_kind, read_manifest


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_audiocaps_lookup_order(tmp_path):
    audio = tmp_path / "audio"
    touch(audio / "101.wav")                 # by audiocap_id
    touch(audio / "train" / "yt2_30.flac")   # by youtube_id_start (int form of 30.0), in a subfolder
    touch(audio / "yt3.mp3")                 # by youtube_id
    (tmp_path / "train.csv").write_text(
        "audiocap_id,youtube_id,start_time,caption\n"
        "101,yt1,0,a dog barks\n"
        "102,yt2,30.0,\"rain, then wind\"\n"
        "103,yt3,5,a car\n"
        "104,yt4,0,nothing here\n"
        "105,yt1,0,\n")
    items = read_manifest(tmp_path / "train.csv", audio_dir=audio)
    assert [i.id for i in items] == ["101", "102", "103", "104", "105"]
    assert items[0].audio_path.endswith("101.wav") and items[1].audio_path.endswith("yt2_30.flac")
    assert items[1].caption == "rain, then wind" and items[2].audio_path.endswith("yt3.mp3")
    assert [i.skip for i in items[:3]] == [None] * 3
    assert items[3].skip.startswith("audio file not found") and items[3].source_line == 5
    assert items[4].skip == "empty caption"


def test_clotho_one_item_per_caption(tmp_path):
    touch(tmp_path / "dev" / "rain.wav")
    (tmp_path / "clotho.csv").write_bytes(
        b"file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
        b"rain.wav,one,two,thr\xffee,four,five\n")
    items = read_manifest(tmp_path / "clotho.csv")
    assert detect_kind(tmp_path / "clotho.csv") == "clotho"
    assert [i.id for i in items] == [f"rain.wav#{k}" for k in range(1, 6)]
    assert all(i.audio_path.endswith("dev/rain.wav") for i in items)
    assert [i.skip for i in items] == [None, None, "caption not valid UTF-8", None, None]
    assert "\ufffd" in items[2].caption and items[2].source_line == 2


def test_generic_csv_lines_relative_paths_and_bad_bytes(tmp_path):
    touch(tmp_path / "clips" / "a.wav")
    touch(tmp_path / "clips" / "b.wav")
    touch(tmp_path / "clips" / "c.wav")
    (tmp_path / "m.csv").write_bytes(
        b"path,caption\n"
        b"clips/a.wav,\"two\nlines\"\n"
        b"clips/b.wav,caf\xc3\xa9 \xe2\x80\x94 fine\n"
        b"\n"
        b"clips/c.wav,not \xe9 utf8\n"
        b"clips/a.wav,again\n")
    items = read_manifest(tmp_path / "m.csv")
    assert [i.source_line for i in items] == [2, 4, 6, 7]
    assert items[0].caption == "two\nlines" and items[1].caption == "café — fine"
    assert [i.skip for i in items] == [None, None, "caption not valid UTF-8", "duplicate id"]
    assert items[0].audio_path == str(tmp_path / "clips" / "a.wav")


def test_jsonl_with_ids(tmp_path):
    touch(tmp_path / "x.flac")
    lines = [{"path": "x.flac", "caption": "hum", "id": "k1"}, {"path": "missing.wav", "caption": "beep"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    items = read_manifest(tmp_path / "m.jsonl")
    assert [(i.id, i.skip is None, i.source_line) for i in items] == [("k1", True, 1), ("missing.wav", False, 2)]


def test_folder_recursive_sorted_empty_captions(tmp_path):
    for name in ("b/2.wav", "a.flac", "b/1.mp3", "notes.txt"):
        touch(tmp_path / "d" / name)
    items = read_manifest(tmp_path / "d")
    assert [i.id for i in items] == ["a.flac", "b/1.mp3", "b/2.wav"]
    assert all(i.caption == "" and i.skip is None for i in items)


@pytest.mark.parametrize("name,content,message", [
    ("m.csv", b"path,text\na.wav,hi\n", "m.csv:1: missing column 'caption'"),
    ("m.csv", b"path,caption\na.wav,hi\nb.wav\n", "m.csv:3: 1 fields, header has 2"),
    ("m.csv", b"", "m.csv:1: empty manifest"),
    ("m.jsonl", b'{"path": "a.wav", "caption": "x"}\n{oops\n', "m.jsonl:2: invalid JSON"),
    ("m.jsonl", b'{"path": "a.wav"}\n', "m.jsonl:1: missing key 'caption'"),
    ("m.txt", b"whatever", "pass --kind"),
])
def test_manifest_errors_name_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ManifestError, match=message.replace("(", r"\(")):
        read_manifest(tmp_path / name)


def test_audiocaps_missing_column(tmp_path):
    (tmp_path / "ac.csv").write_text("audiocap_id,youtube_id,caption\n1,y,hi\n")
    with pytest.raises(ManifestError, match="ac.csv:1: missing column 'start_time'"):
        read_manifest(tmp_path / "ac.csv", kind="audiocaps")
