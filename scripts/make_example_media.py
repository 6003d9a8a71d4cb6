#!/usr/bin/env python
"""Make the small input media and the thumbnails of ``example_workflows/``.

    python scripts/make_example_media.py [--out example_workflows] [--only media|thumbnails]

Everything comes from public-domain / CC0 sources, so the files can ship with the pack:

* pictures: scikit-image's sample photos -- ``astronaut`` (Eileen Collins, NASA, public domain) animated with a slow
  pan/zoom for the face shots; ``rocket`` (SpaceX, released into the public domain), ``coffee`` (CC0, Rachel Michetti)
  and ``chelsea`` (CC0, Stefan van der Walt) for the cutaways (licences as stated in ``skimage.data``'s docstrings);
* speech: synthesised with the espeak-ng command-line tool (its output is not covered by its GPL licence).

The videos are H.264 (crf 28, yuv420p, 25 fps) with a 16 kHz mono AAC voice, the voices 16 kHz mono PCM wav; each file
stays well under 1 MB (example media stay small: users copy them to ``ComfyUI/input/``).
espeak-ng is needed only to run this tool, never by the pack. Frames are encoded with PyAV (no ffmpeg binary).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from fractions import Fraction
from typing import Dict, List, Sequence, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "example_workflows")
FPS = 25
VOICE_RATE = 16000
CRF = 28

# file names used by the example workflows (scripts/make_workflows.py imports these)
FACE_CLIP = "musetalk_example_face.mp4"           # one speaker, 4 s, 384x384
CUTAWAY_CLIP = "musetalk_example_cutaways.mp4"    # edited clip: face shots + B-roll cutaways, 6 s, 384x384
TWO_FACES_CLIP = "musetalk_example_two_faces.mp4"  # two faces side by side, 4 s, 384x288
VOICE = "musetalk_example_voice.wav"              # new voice for the face clip, ~4 s
DUB_VOICE = "musetalk_example_dub_voice.wav"      # new voice for the edited clip, ~6 s
MEDIA = (FACE_CLIP, CUTAWAY_CLIP, TWO_FACES_CLIP, VOICE, DUB_VOICE)

ORIGINAL_LINE = "This is the original sound of the clip, before it is dubbed."
VOICE_LINE = "Hello! I have a brand new voice, and my lips follow every word."
DUB_LINE = "Welcome back to the launch. Between the rocket and the coffee break, only my face is lip-synced."
TWO_FACES_LINE = "Only the face on the right is speaking in this shot."

SIZE = 384


# ---- pictures ------------------------------------------------------------------------------------------------------
def photo(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return np.ascontiguousarray(img[..., :3])


def crop_resize(img: np.ndarray, box: Tuple[float, float, float, float], size: Tuple[int, int]) -> np.ndarray:
    """Crop ``box`` (x1, y1, x2, y2, may be fractional) and resize to ``size`` (w, h) in one affine warp."""
    import cv2

    x1, y1, x2, y2 = box
    w, h = size
    sx, sy = w / (x2 - x1), h / (y2 - y1)
    m = np.array([[sx, 0, -x1 * sx], [0, sy, -y1 * sy]], np.float64)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def shot(img: np.ndarray, n: int, box0, box1, size=(SIZE, SIZE)) -> np.ndarray:
    """``n`` frames moving the crop window smoothly from ``box0`` to ``box1`` (a slow pan/zoom)."""
    out = np.empty((n, size[1], size[0], 3), np.uint8)
    for i in range(n):
        t = 0.5 - 0.5 * np.cos(np.pi * i / max(1, n - 1))  # ease in/out
        box = tuple(a + (b - a) * t for a, b in zip(box0, box1))
        out[i] = crop_resize(img, box, size)
    return out


def face_clip() -> np.ndarray:
    a = photo("astronaut")  # 512x512, face box about (178, 63)-(266, 173)
    return shot(a, 4 * FPS, (56, 0, 392, 336), (96, 20, 376, 300))


def cutaway_clip() -> np.ndarray:
    a = photo("astronaut")
    parts = [
        shot(a, 35, (40, 0, 400, 360), (70, 10, 380, 320)),         # medium shot, slow push-in
        shot(photo("rocket"), 20, (120, 0, 547, 427), (160, 0, 587, 427)),  # B-roll: the launch pad
        shot(a, 35, (110, 20, 340, 250), (100, 15, 340, 255)),      # close-up
        shot(photo("coffee"), 15, (80, 0, 480, 400), (100, 0, 500, 400)),   # B-roll: coffee
        shot(photo("chelsea"), 20, (60, 0, 360, 300), (90, 0, 390, 300)),   # B-roll: the cat
        shot(a, 25, (70, 10, 380, 320), (40, 0, 400, 360)),         # back to the medium shot, pulling out
    ]
    return np.concatenate(parts)


def two_faces_clip() -> np.ndarray:
    """Two faces side by side (the astronaut and a mirrored, warmer-toned copy, a little smaller)."""
    a = photo("astronaut")
    n = 4 * FPS
    half = (SIZE // 2, 288)
    left = shot(a, n, (131, 0, 311, 270), (126, 5, 306, 275), half)
    b = np.ascontiguousarray(a[:, ::-1])
    tone = np.array([1.08, 0.98, 0.86], np.float32)
    b = np.clip(b.astype(np.float32) * tone, 0, 255).astype(np.uint8)
    right = shot(b, n, (181, 0, 401, 330), (186, 0, 406, 330), half)
    return np.concatenate([left, right], axis=2)


# ---- sound ---------------------------------------------------------------------------------------------------------
def espeak(text: str, voice: str = "en-us", speed: int = 150, pitch: int = 50) -> np.ndarray:
    """Speech from espeak-ng as float32 mono at 16 kHz."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng is needed to make the example voices (apt-get install espeak-ng).")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.wav")
        subprocess.run([exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", path, text], check=True,
                       capture_output=True)
        with wave.open(path, "rb") as w:
            rate, ch = w.getframerate(), w.getnchannels()
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
    x = resample(x.reshape(-1, ch).mean(1), rate, VOICE_RATE)
    loud = np.flatnonzero(np.abs(x) > 0.01)  # trim espeak's leading/trailing silence
    return x[max(0, loud[0] - 160):loud[-1] + 1600] if len(loud) else x


def resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Mono float32 resampling with PyAV's libswresample."""
    import av

    if src == dst:
        return x.astype(np.float32)
    r = av.AudioResampler(format="flt", layout="mono", rate=dst)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None], np.float32), format="flt", layout="mono")
    frame.sample_rate = src
    frame.pts = 0
    out = [f.to_ndarray().reshape(-1) for f in r.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in r.resample(None)]
    return np.concatenate(out).astype(np.float32)


def fit(x: np.ndarray, seconds: float, lead: float = 0.2) -> np.ndarray:
    """``lead`` s of silence, the speech, then silence up to ``seconds`` (speech longer than that is kept whole)."""
    pre = np.zeros(int(lead * VOICE_RATE), np.float32)
    y = np.concatenate([pre, x])
    n = int(round(seconds * VOICE_RATE))
    if len(y) > n:
        print(f"  note: speech is {len(y) / VOICE_RATE:.2f} s, longer than {seconds} s")
    if len(y) < n:
        y = np.concatenate([y, np.zeros(n - len(y), np.float32)])
    peak = float(np.abs(y).max()) or 1.0
    return (y * (0.8 / peak)).astype(np.float32)


def write_wav(path: str, x: np.ndarray, rate: int = VOICE_RATE) -> None:
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def write_video(path: str, frames: np.ndarray, audio: np.ndarray, fps: int = FPS, crf: int = CRF) -> None:
    """H.264 yuv420p + AAC mono with PyAV; the audio is cut/padded to the video length."""
    import av

    n = int(round(len(frames) / fps * VOICE_RATE))
    audio = np.concatenate([audio[:n], np.zeros(max(0, n - len(audio)), np.float32)])
    with av.open(path, "w") as c:
        c.metadata["comment"] = "MuseTalk Enhanced example media (public-domain sources)"
        v = c.add_stream("libx264", rate=Fraction(fps))
        v.height, v.width = frames.shape[1:3]
        v.pix_fmt = "yuv420p"
        v.options = {"crf": str(crf), "preset": "slow", "tune": "stillimage"}
        v.codec_context.options = {"threads": "1"}
        a = c.add_stream("aac", rate=VOICE_RATE, layout="mono")
        a.bit_rate = 32000
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        for pos in range(0, len(audio), 1024):
            chunk = np.ascontiguousarray(audio[None, pos:pos + 1024], np.float32)
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            af.sample_rate = VOICE_RATE
            af.pts = pos
            for p in a.encode(af):
                c.mux(p)
        for p in a.encode():
            c.mux(p)


def make_media(out_dir: str) -> List[str]:
    os.makedirs(out_dir, exist_ok=True)
    written = []

    def done(name):
        p = os.path.join(out_dir, name)
        written.append(p)
        print(f"  {name}: {os.path.getsize(p) / 1024:.0f} KB")

    original = espeak(ORIGINAL_LINE, "en-gb", 165)
    write_video(os.path.join(out_dir, FACE_CLIP), face_clip(), fit(original, 4.0))
    done(FACE_CLIP)
    write_video(os.path.join(out_dir, CUTAWAY_CLIP), cutaway_clip(), fit(espeak(ORIGINAL_LINE, "en-gb", 140), 6.0))
    done(CUTAWAY_CLIP)
    write_video(os.path.join(out_dir, TWO_FACES_CLIP), two_faces_clip(), fit(espeak(TWO_FACES_LINE, "en-us+f3"), 4.0))
    done(TWO_FACES_CLIP)
    write_wav(os.path.join(out_dir, VOICE), fit(espeak(VOICE_LINE, "en-us", 180), 4.0, lead=0.1))
    done(VOICE)
    write_wav(os.path.join(out_dir, DUB_VOICE), fit(espeak(DUB_LINE, "en-us+f2", 180, 60), 6.0, lead=0.1))
    done(DUB_VOICE)
    return written


# ---- template titles -----------------------------------------------------------------------------------------------
# The frontend (1.27) titles a pack's template card with its file name and describes it with the same name, '-' and
# '_' read as spaces; the number gives the reading order. Workflow slug -> file name (without .json / .jpg).
TEMPLATES: Dict[str, str] = {
    "musetalk_basic": "1. Lip-sync a video to a new voice",
    "cutaway_dubbing": "2. Dub an edited clip with cutaways",
    "latentsync_with_fallback": "3. LatentSync 1.6 with MuseTalk fallback",
    "multi_face_speaker_select": "4. Two faces, choose who speaks",
    "chain_with_core_video": "5. With ComfyUI core video nodes",
    "vhs_lipsync": "6. With VideoHelperSuite (needs that pack)",
    "real_time_avatar": "7. Real-time avatar, prepare once and speak any voice",
    "restore_mouth_only": "8. Sharpen or restore only the new mouth (MASK)",
}


# ---- thumbnails ----------------------------------------------------------------------------------------------------
# workflow name -> (title, subtitle, [(media file, frame index, mark), ...]); mark: None, "cutaway" (red frame) or a
# box (x1, y1, x2, y2) in source pixels around the face that is lip-synced (green)
SPEAKER_BOX = (236, 44, 330, 162)   # the right-hand face of TWO_FACES_CLIP (as Face Detect finds it, with margin)
THUMBNAILS: Dict[str, Tuple[str, str, Sequence[Tuple[str, int, object]]]] = {
    "musetalk_basic": ("MuseTalk lip-sync", "video + new voice -> talking face",
                       [(FACE_CLIP, 0, None), (FACE_CLIP, 50, None), (FACE_CLIP, 99, None)]),
    "cutaway_dubbing": ("Dubbing with cutaways", "B-roll frames pass through untouched",
                        [(CUTAWAY_CLIP, 10, None), (CUTAWAY_CLIP, 45, "cutaway"), (CUTAWAY_CLIP, 70, None),
                         (CUTAWAY_CLIP, 100, "cutaway"), (CUTAWAY_CLIP, 115, "cutaway"), (CUTAWAY_CLIP, 140, None)]),
    "latentsync_with_fallback": ("LatentSync 1.6", "falls back to MuseTalk without its weights",
                                 [(FACE_CLIP, 10, None), (FACE_CLIP, 90, None)]),
    "multi_face_speaker_select": ("Pick the speaker", "two faces: lip-sync only the chosen one",
                                  [(TWO_FACES_CLIP, 0, SPEAKER_BOX), (TWO_FACES_CLIP, 99, SPEAKER_BOX)]),
    "chain_with_core_video": ("Core video nodes", "Load Video -> lip-sync -> Create / Save Video",
                              [(FACE_CLIP, 20, None), (FACE_CLIP, 80, None)]),
    "vhs_lipsync": ("VideoHelperSuite", "VHS Load Video -> lip-sync -> Video Combine",
                    [(CUTAWAY_CLIP, 20, None), (CUTAWAY_CLIP, 60, None), (CUTAWAY_CLIP, 120, "cutaway")]),
    "real_time_avatar": ("Real-time avatar", "prepare a face once, then speak any voice fast",
                         [(FACE_CLIP, 5, None), (FACE_CLIP, 45, None), (FACE_CLIP, 85, None)]),
    "restore_mouth_only": ("Restore only the new mouth", "the MASK of the changed pixels -> core compositing",
                           [(FACE_CLIP, 30, None), (FACE_CLIP, 30, "mouth_mask")]),
}
THUMB_SIZE = (512, 288)


def read_frames(path: str, indices: Sequence[int]) -> Dict[int, np.ndarray]:
    import av

    want = set(indices)
    got = {}
    with av.open(path) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in want:
                got[i] = f.to_ndarray(format="rgb24")
            if len(got) == len(want):
                break
    return got


def mark(frame: np.ndarray, how) -> np.ndarray:
    """Draw the thumbnail mark on a copy of ``frame``: a red frame + "cutaway", or a green box."""
    import cv2

    img = frame.copy()
    h, w = img.shape[:2]
    if how == "cutaway":
        b = max(4, w // 48)
        img[:b], img[-b:], img[:, :b], img[:, -b:] = (220, 30, 30), (220, 30, 30), (220, 30, 30), (220, 30, 30)
        cv2.putText(img, "cutaway", (b + 8, h - b - 12), cv2.FONT_HERSHEY_SIMPLEX, w / 320, (255, 255, 255), 2 * b // 3,
                    cv2.LINE_AA)
    elif how == "mouth_mask":           # the lower face, tinted like a MASK preview
        tint = np.zeros(img.shape[:2], np.float32)
        cv2.ellipse(tint, (w // 2, int(h * 0.62)), (w // 6, h // 9), 0, 0, 360, 1.0, -1)
        tint = cv2.GaussianBlur(tint, (0, 0), max(1.0, w / 60))[..., None]
        img = (img * (1 - 0.55 * tint) + np.array([255, 255, 255]) * 0.55 * tint).astype(np.uint8)
        cv2.putText(img, "mask", (8, h - 14), cv2.FONT_HERSHEY_SIMPLEX, w / 320, (255, 255, 255), 2, cv2.LINE_AA)
    elif how is not None:
        x1, y1, x2, y2 = (int(v) for v in how)
        cv2.rectangle(img, (x1, y1), (x2, y2), (40, 230, 60), max(2, w // 128))
    return img


def thumbnail(title: str, subtitle: str, frames: Sequence[np.ndarray], size=THUMB_SIZE) -> np.ndarray:
    """A frame strip (or grid) from the example media with the title on a dark band."""
    import cv2
    from PIL import Image, ImageDraw, ImageFont

    w, h = size
    band = 78
    canvas = np.full((h, w, 3), (24, 26, 32), np.uint8)
    area_h = h - band - 12
    n = len(frames)
    rows = 2 if n > 3 else 1
    cols = int(np.ceil(n / rows))
    gap = 6
    cell_h = (area_h - gap * (rows - 1)) // rows
    for k, fr in enumerate(frames):
        r, c = divmod(k, cols)
        fh, fw = fr.shape[:2]
        cell_w = (w - 12 - gap * (cols - 1)) // cols
        s = min(cell_w / fw, cell_h / fh)
        tw, th = int(fw * s), int(fh * s)
        img = cv2.resize(fr, (tw, th), interpolation=cv2.INTER_AREA)
        x0 = 6 + c * (cell_w + gap) + (cell_w - tw) // 2
        y0 = 6 + r * (cell_h + gap) + (cell_h - th) // 2
        canvas[y0:y0 + th, x0:x0 + tw] = img
    pil = Image.fromarray(canvas)
    d = ImageDraw.Draw(pil)
    d.rectangle([0, h - band, w, h], fill=(16, 17, 22))
    d.rectangle([0, h - band, 5, h], fill=(240, 160, 40))
    d.text((16, h - band + 8), title, font=ImageFont.load_default(size=30), fill=(245, 245, 245))
    d.text((16, h - band + 46), subtitle, font=ImageFont.load_default(size=18), fill=(190, 195, 205))
    return np.asarray(pil)


def make_thumbnails(out_dir: str) -> List[str]:
    from PIL import Image

    written = []
    for name, (title, subtitle, picks) in THUMBNAILS.items():
        by_file: Dict[str, List[int]] = {}
        for f, i, _ in picks:
            by_file.setdefault(f, []).append(i)
        cache = {f: read_frames(os.path.join(out_dir, f), idx) for f, idx in by_file.items()}
        frames = [mark(cache[f][i], how) for f, i, how in picks]
        path = os.path.join(out_dir, TEMPLATES[name] + ".jpg")
        Image.fromarray(thumbnail(title, subtitle, frames)).save(path, quality=85, optimize=True)
        written.append(path)
        print(f"  {os.path.basename(path)}: {os.path.getsize(path) / 1024:.0f} KB")
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=OUT_DIR)
    ap.add_argument("--only", choices=("media", "thumbnails"))
    a = ap.parse_args(argv)
    if a.only != "thumbnails":
        print("media:")
        make_media(a.out)
    if a.only != "media":
        print("thumbnails:")
        make_thumbnails(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
