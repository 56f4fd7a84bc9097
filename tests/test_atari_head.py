"""Atari-HEAD loading: the real v4 sample as it is, and tiny generated trials (flat layout,
broken inputs), each failure one line naming the file (and line)."""

from __future__ import annotations

import io
import tarfile
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from fls.errors import AtariHeadError
from fls.saliency.atari_head import (
    GAMES,
    AtariHead,
    AtariHeadWarning,
    read_frames,
    read_labels,
)

SAMPLE_TRIAL = 593
SAMPLE_STEM = "593_RZ_5037271_Aug-05-15-35-12"
V4_HEADER = (
    "GameName,trial_id,subject_id,load_trial,highest_score,total_frame,total_game_play_time,"
    "total_episode,max_error,avg_error,low_sample_rate,frame_averaging,fps"
)
LABEL_HEADER = "frame_id,episode_id,score,duration(ms),unclipped_reward,action,gaze_positions"


# ---------------------------------------------------------------------------------------
# Generated trials
# ---------------------------------------------------------------------------------------


def png(value: int) -> bytes:
    """A 160 x 210 RGB frame whose every pixel is (value, value + 1, value + 2)."""
    rgb = np.empty((210, 160, 3), np.uint8)
    rgb[:] = (value, value + 1, value + 2)
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def gaze_row(subject: str, uid: str, k: int, gaze: str | None = None) -> str:
    return f"{subject}_{uid}_{k},0,{100 + k},50,0,3,{gaze if gaze is not None else f'{k}.5,{2 * k}.25'}"


def write_trial(
    place: Path,
    trial: int,
    n: int = 12,
    *,
    subject: str = "XY",
    uid: str = "123",
    rows: list[str] | None = None,
    skip_png: tuple[int, ...] = (),
) -> Path:
    """A trial of n frames (PNG k filled with value k) and its label file; returns the archive."""
    place.mkdir(parents=True, exist_ok=True)
    stem = f"{trial}_{subject}_{uid}_Jan-01-00-00-00"
    archive = place / f"{stem}.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tar:
        # Name order (1, 10, 11, 2, ...) like the real archives, not frame order.
        for k in sorted(range(1, n + 1), key=str):
            if k in skip_png:
                continue
            data = png(k)
            info = tarfile.TarInfo(f"{stem}/{subject}_{uid}_{k}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    rows = rows if rows is not None else [gaze_row(subject, uid, k) for k in range(1, n + 1)]
    (place / f"{stem}.txt").write_text("\n".join([LABEL_HEADER, *rows]) + "\n")
    return archive


def write_v4_meta(root: Path, rows: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "meta_data.csv"
    path.write_bytes(("\r\n".join([V4_HEADER, *rows]) + "\r\n").encode())
    return path


def v4_row(game: str, trial: int, subject: str = " R") -> str:
    return f"{game},{trial},{subject},0,1000,12,600,1,0.5,0.25,1.20%,TRUE,20"


@pytest.fixture
def v4(tmp_path: Path) -> Path:
    """A v4 download: one ms_pacman trial, one highscore trial."""
    write_v4_meta(tmp_path, [v4_row("ms_pacman", 7), v4_row("ms_pacman_highscore", 8)])
    write_trial(tmp_path / "ms_pacman", 7)
    write_trial(tmp_path / "ms_pacman" / "highscore", 8, n=5)
    return tmp_path


def error(call, *args) -> str:
    with pytest.raises(AtariHeadError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------
# The real sample
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(atari_head_sample: Path) -> AtariHead:
    return AtariHead(atari_head_sample)


def test_sample_meta_data_v4_quirks(sample: AtariHead, atari_head_sample: Path):
    raw = (atari_head_sample / "meta_data.csv").read_bytes()
    # CRLF between the header and 471 rows, none after the last
    assert raw.count(b"\r\n") == raw.count(b"\n") == len(sample.meta) and not raw.endswith(b"\n")
    assert sample.layout == "v4"
    assert len(sample.meta) == 471
    row = sample.meta[SAMPLE_TRIAL]
    assert row.dataset_game == "ms_pacman_highscore" and row.highscore and row.game == "mspacman"
    assert row.frames == 17382
    assert row.fields["fps"] == 20  # last field: no '\r' left on it
    assert row.fields["low_sample_rate"] == 0.007  # '0.70%'
    assert row.fields["frame_averaging"] is False
    assert row.fields["load_trial"] == 118
    assert sample.meta[314].fields["subject_id"] == "R"  # ' R' in the file
    assert {r.fields["subject_id"] for r in sample.meta.values()} == {"R", "J", "K", "L"}
    assert not any("beam" in r.dataset_game.lower() for r in sample.meta.values())


def test_sample_layout_discovery(sample: AtariHead, atari_head_sample: Path):
    (info,) = sample.trials("mspacman")
    assert info.trial_id == SAMPLE_TRIAL and info.highscore and info.game == "mspacman"
    place = atari_head_sample / "ms_pacman" / "highscore"
    assert info.archive == place / f"{SAMPLE_STEM}.tar.bz2"
    assert info.labels == place / f"{SAMPLE_STEM}.txt"
    assert sample.trial(SAMPLE_TRIAL) == info
    assert sample.trials("breakout") == [] and sample.trials("spaceinvaders") == []
    assert "not on disk" in error(sample.trial, 118)  # listed, not in the sample


def test_sample_labels(sample: AtariHead):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the sample has no null rows: no warning
        trial = sample.load(SAMPLE_TRIAL)
    labels = trial.labels
    assert len(trial) == 400
    assert labels.frame_ids[0] == "RZ_5037271_1" and labels.frame_ids[-1] == "RZ_5037271_400"
    counts = labels.gaze.counts()
    assert counts.sum() == 22038
    assert (counts[0], counts[1], counts[2]) == (611, 49, 1606)
    assert counts.min() == 7 and counts.max() == 1606
    assert labels.null_gaze_frames == 0
    assert labels.gaze[0][0].tolist() == [79.85, 105.17]  # x, y: the first pair of line 2
    assert labels.gaze[-1][-1].tolist() == [35.8, 105.65]
    assert labels.scalars["score"][[0, -1]].tolist() == [66481, 66571]
    assert labels.scalars["duration_ms"][0] == 611
    assert labels.scalars["action"][-1] == 4
    y = labels.gaze.points[:, 1]
    assert y.max() > 210  # off-frame samples are kept here; fixation maps drop them


def test_sample_frames_streamed_in_frame_order(sample: AtariHead, monkeypatch):
    def no_extraction(*args, **kwargs):
        raise AssertionError("frames must be streamed, not extracted to disk")

    monkeypatch.setattr(tarfile.TarFile, "extractall", no_extraction)
    monkeypatch.setattr(tarfile.TarFile, "extract", no_extraction)
    trial = sample.load(SAMPLE_TRIAL)
    frames = list(trial.frames())
    assert len(frames) == 400
    assert all(f.shape == (210, 160, 3) and f.dtype == np.uint8 for f in frames)
    # Archive members are in name order (1, 10, 100, 101, ...): check a few by name, in RGB.
    with tarfile.open(trial.info.archive) as tar:
        for k in (1, 2, 10, 99, 100, 400):
            data = tar.extractfile(f"{SAMPLE_STEM}/RZ_5037271_{k}.png").read()
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            assert np.array_equal(frames[k - 1], bgr[..., ::-1])
    assert not np.array_equal(frames[0], frames[9])


# ---------------------------------------------------------------------------------------
# Game names
# ---------------------------------------------------------------------------------------


def test_game_names(repo: Path):
    ours = {p.stem for p in (repo / "conf" / "game").glob("*.yaml")}
    assert set(GAMES) == ours - {"beamrider"}
    assert set(GAMES.values()) <= ours


def test_unknown_and_unrecorded_games(v4: Path):
    head = AtariHead(v4)
    message = error(head.trials, "pong")
    assert str(v4 / "meta_data.csv") in message and "unknown game 'pong'" in message
    assert "not in Atari-HEAD" in error(head.trials, "beamrider")


# ---------------------------------------------------------------------------------------
# Generated layouts
# ---------------------------------------------------------------------------------------


def test_v4_generated(v4: Path):
    head = AtariHead(v4)
    infos = head.trials("mspacman")
    assert [(i.trial_id, i.highscore) for i in infos] == [(7, False), (8, True)]
    assert infos[1].archive.parent == v4 / "ms_pacman" / "highscore"
    assert head.meta[7].fields["low_sample_rate"] == 0.012
    assert head.meta[7].fields["frame_averaging"] is True
    frames = list(head.load(7).frames())
    assert [int(f[0, 0, 0]) for f in frames] == list(range(1, 13))
    assert frames[0][0, 0].tolist() == [1, 2, 3]  # RGB, not BGR


def test_flat_layout(tmp_path: Path):
    rows = [
        "TrialNumber,Game,Subject,NumberOfFrames",
        "3,Mspacman,KM,12",
        ",,,",  # the old release has blank rows
        "4,Breakout,KM,5",
        "5,Alien,KM,5",
    ]
    (tmp_path / "meta_data.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode())
    write_trial(tmp_path, 3, subject="KM", uid="1")
    write_trial(tmp_path, 4, n=5, subject="KM", uid="2")
    write_trial(tmp_path, 5, n=5, subject="KM", uid="3")
    head = AtariHead(tmp_path)
    assert head.layout == "flat"
    (pacman,) = head.trials("mspacman")
    assert (pacman.trial_id, pacman.game, pacman.archive.parent) == (3, "mspacman", tmp_path)
    assert pacman.meta.frames == 12
    assert [i.trial_id for i in head.trials("breakout")] == [4]
    trial = head.load(3)
    assert trial.labels.gaze.counts().tolist() == [1] * 12
    assert trial.labels.gaze[11].tolist() == [[12.5, 24.25]]
    assert [int(f[0, 0, 0]) for f in trial.frames()] == list(range(1, 13))


def test_unknown_layout(tmp_path: Path):
    (tmp_path / "meta_data.csv").write_text("a,b\n1,2\n")
    message = error(AtariHead, tmp_path)
    assert f"{tmp_path / 'meta_data.csv'}:1:" in message
    assert "not found" in error(AtariHead, tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------
# Broken inputs: one error naming the file (and line)
# ---------------------------------------------------------------------------------------


def test_null_gaze_rows_warn_once_with_count(tmp_path: Path):
    rows = [gaze_row("XY", "123", k, "null" if k in (2, 5) else None) for k in range(1, 7)]
    write_trial(tmp_path, 1, n=6, rows=rows)
    path = tmp_path / "1_XY_123_Jan-01-00-00-00.txt"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = read_labels(path)
    assert len(caught) == 1 and issubclass(caught[0].category, AtariHeadWarning)
    assert str(path) in str(caught[0].message) and "2 of 6 frames" in str(caught[0].message)
    assert labels.null_gaze_frames == 2
    assert labels.gaze.counts().tolist() == [1, 0, 1, 1, 0, 1]


@pytest.mark.parametrize(
    "gaze, complaint",
    [
        ("1.5,2.5,3.5", "3 gaze coordinates"),
        ("1.5,abc", "'abc' is not a number"),
        ("1.5,nan", "finite"),
        ("null,4", "'null' is not a number"),
    ],
)
def test_malformed_gaze_row(tmp_path: Path, gaze: str, complaint: str):
    rows = [gaze_row("XY", "123", k, gaze if k == 3 else None) for k in range(1, 5)]
    write_trial(tmp_path, 1, n=4, rows=rows)
    path = tmp_path / "1_XY_123_Jan-01-00-00-00.txt"
    message = error(read_labels, path)
    assert message.startswith(f"{path}:4:") and complaint in message


def test_malformed_label_fields(tmp_path: Path):
    path = tmp_path / "1_XY_123_Jan-01-00-00-00.txt"
    rows = [gaze_row("XY", "123", 1), "XY_123_2,0,oops,50,0,3,1,2"]
    write_trial(tmp_path, 1, n=2, rows=rows)
    assert error(read_labels, path).startswith(f"{path}:3: score='oops'")
    write_trial(tmp_path, 1, n=2, rows=[gaze_row("XY", "123", 1), "XY_123_2,0,1"])
    assert error(read_labels, path).startswith(f"{path}:3: 3 fields")
    write_trial(tmp_path, 1, n=3, rows=[gaze_row("XY", "123", k) for k in (1, 3, 2)])
    assert error(read_labels, path).startswith(f"{path}:4: frame_id 'XY_123_2' should be frame number 4")
    path.write_text("frame,gaze\n")
    assert error(read_labels, path).startswith(f"{path}:1: expected the header")


def test_label_rows_dropped_by_a_re_export_are_null_rows_with_one_warning(tmp_path: Path):
    # frames 3 and 4 had no gaze; a re-exported copy dropped their rows, the PNGs are there
    write_trial(tmp_path, 1, n=6, rows=[gaze_row("XY", "123", k) for k in (1, 2, 5, 6)])
    path = tmp_path / "1_XY_123_Jan-01-00-00-00.txt"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = read_labels(path)
    assert len(caught) == 1 and str(path) in str(caught[0].message)
    assert "2 of 6 frames have no label row" in str(caught[0].message)
    assert labels.frame_ids == [f"XY_123_{k}" for k in range(1, 7)]
    assert labels.gaze.counts().tolist() == [1, 1, 0, 0, 1, 1]
    assert np.isnan(labels.scalars["score"][2:4]).all() and labels.scalars["score"][4] == 105
    # the frames of the gap come from the archive as usual
    frames = list(read_frames(tmp_path / "1_XY_123_Jan-01-00-00-00.tar.bz2", labels))
    assert [int(f[0, 0, 0]) for f in frames] == [1, 2, 3, 4, 5, 6]


def test_a_truncated_label_file_is_reported(tmp_path: Path):
    archive = write_trial(tmp_path, 1, n=8, rows=[gaze_row("XY", "123", k) for k in range(1, 9)])
    path = tmp_path / "1_XY_123_Jan-01-00-00-00.txt"
    text = path.read_text()
    cut = text.index("XY_123_6,") + len("XY_123_6,0,106,50,0,3,6.5,")  # mid-way through a gaze pair
    path.write_text(text[:cut])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = read_labels(path)
        frames = list(read_frames(archive, labels))
    messages = [str(w.message) for w in caught]
    assert len(labels) == 5 and len(frames) == 5
    assert any(f"{path}:7: the last line has no line end" in m and "dropped" in m for m in messages), messages
    assert any(f"{archive}: 3 of its 8 frames have no row" in m for m in messages), messages
    # a whole last row without its line end is read, and still reported
    path.write_text(text.rstrip("\n"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(read_labels(path)) == 8
    assert any("the last line has no line end" in str(w.message) and "dropped" not in str(w.message) for w in caught)


def test_missing_frame(v4: Path):
    archive = write_trial(v4 / "ms_pacman", 7, skip_png=(3, 10))
    trial = AtariHead(v4).load(7)
    message = error(trial.frames)
    assert str(archive) in message and "XY_123_3.png" in message
    assert f"{trial.info.labels}:4" in message and "(2 of 12 label rows" in message


def test_truncated_archive(v4: Path):
    archive = v4 / "ms_pacman" / "7_XY_123_Jan-01-00-00-00.tar.bz2"
    archive.write_bytes(archive.read_bytes()[:-200])
    trial = AtariHead(v4).load(7)
    message = error(trial.frames)
    assert message.startswith(f"{archive}: truncated or corrupt archive")


def test_corrupt_archive(v4: Path):
    archive = v4 / "ms_pacman" / "7_XY_123_Jan-01-00-00-00.tar.bz2"
    archive.write_bytes(b"BZh9" + bytes(100))
    assert error(AtariHead(v4).load(7).frames).startswith(f"{archive}: truncated or corrupt")


def test_trial_missing_from_meta_data(v4: Path):
    archive = write_trial(v4 / "ms_pacman", 99)
    message = error(AtariHead(v4).trials, "mspacman")
    assert message.startswith(f"{archive}: trial 99 is not in {v4 / 'meta_data.csv'}")
    assert error(AtariHead(v4).trial, 99).startswith(f"{v4 / 'meta_data.csv'}: trial 99 is not listed")


def test_trial_in_the_wrong_place(v4: Path):
    write_v4_meta(v4, [v4_row("ms_pacman", 7), v4_row("ms_pacman", 8)])
    message = error(AtariHead(v4).trials, "mspacman")
    assert "8_XY_123" in message and "meta_data.csv:3" in message and "highscore" in message


def test_label_file_without_archive(v4: Path):
    (v4 / "ms_pacman" / "7_XY_123_Jan-01-00-00-00.tar.bz2").unlink()
    message = error(AtariHead(v4).trials, "mspacman")
    assert message.startswith(f"{v4 / 'ms_pacman' / '7_XY_123_Jan-01-00-00-00.tar.bz2'}: missing")


def test_unknown_game_in_meta_data(tmp_path: Path):
    path = write_v4_meta(tmp_path, [v4_row("ms_pacman", 7), v4_row("pong", 8)])
    assert error(AtariHead, tmp_path).startswith(f"{path}:3: unknown game 'pong'")


def test_bad_meta_data_rows(tmp_path: Path):
    path = write_v4_meta(tmp_path, [v4_row("ms_pacman", 7), v4_row("ms_pacman", 7)])
    assert error(AtariHead, tmp_path).startswith(f"{path}:3: trial 7 is listed twice")
    write_v4_meta(tmp_path, [v4_row("ms_pacman", 7).replace(",7,", ",x7,")])
    assert error(AtariHead, tmp_path).startswith(f"{path}:2: trial_id='x7'")
    write_v4_meta(tmp_path, ["ms_pacman,7,R"])
    assert error(AtariHead, tmp_path).startswith(f"{path}:2: 3 fields")


def test_a_label_file_that_is_not_utf8_is_one_line(tmp_path: Path):
    write_trial(tmp_path, 1, n=6)
    path = tmp_path / "1_XY_123_Jan-01-00-00-00.txt"
    lines = path.read_bytes().split(b"\n")
    lines[4] = lines[4].replace(b",3,", b",\xff3,")  # one byte of another encoding in the 4th row
    path.write_bytes(b"\n".join(lines))
    message = error(read_labels, path)
    assert message.startswith(f"{path}:5: not UTF-8 text (byte 0xff")


def test_a_meta_data_file_that_is_not_utf8_is_one_line(tmp_path: Path):
    path = write_v4_meta(tmp_path, [v4_row("ms_pacman", 7)])
    path.write_bytes(path.read_bytes().replace(b"ms_pacman", b"ms_pac\xe9man"))
    assert error(AtariHead, tmp_path).startswith(f"{path}:2: not UTF-8 text (byte 0xe9")


def test_the_fingerprint_knows_the_archive_by_its_content(v4: Path):
    info = AtariHead(v4).trial(7)
    before = info.fingerprint()
    data = bytearray(info.archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the same size, another archive
    info.archive.write_bytes(bytes(data))
    after = AtariHead(v4).trial(7).fingerprint()
    assert after["archive_bytes"] == before["archive_bytes"] and after != before
