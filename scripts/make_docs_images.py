"""Pictures for the README, made from real media with the real MTCNN detector and the pack's own geometry:

* docs/timeline.jpg: one thumbnail per frame of an edited clip (face shots and B-roll); green = lip-synced,
  red = cutaway passed through untouched, with the shot cuts marked.
* docs/icon.png: the 400x400 registry icon.
* docs/paste_region.jpg: what MuseTalk replaces in a face frame: detector box, crop box (bbox_shift/extra_margin),
  and the feathered lower-face blend mask; outside the mask every pixel is the source pixel.
* docs/masks.jpg: the blend masks of one face (pipeline/backends/blending.py prepare_blend_mask), one panel per
  mode: feather, box, mouth, mouth with dilate_px=12, and jaw when the BiSeNet face parser weights are on disk.
* docs/edge_face.jpg: a face cut by the frame's left edge (jaw landmarks just outside the frame): the crop box and the
  256x256 network crop with edge_faces=original (falls back to the detector box) and edge_faces=pad (follows the
  landmarks out of the frame; the crop is padded with border pixels). Prints each box's IoU against the same face's
  box on the uncut photo.

Run: .venv/bin/python scripts/make_docs_images.py
"""
import os
import sys

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import conftest  # noqa: E402,F401  (imports the pack as musetalk_enhanced)
import mediakit as mk  # noqa: E402

from musetalk_enhanced.models import registry  # noqa: E402
from musetalk_enhanced.pipeline.backends.blending import (  # noqa: E402
    BlendOptions, expanded_crop_box, load_face_parser, prepare_blend_mask)
from musetalk_enhanced.pipeline.backends.musetalk_engine import crop_face  # noqa: E402
from musetalk_enhanced.pipeline.faces.cropbox import face_crop_geometry  # noqa: E402
from musetalk_enhanced.pipeline.faces.detectors import create_detector  # noqa: E402
from musetalk_enhanced.pipeline.faces.tracks import analyze_faces  # noqa: E402
from musetalk_enhanced.pipeline.media.frames import ArrayFrames  # noqa: E402
from musetalk_enhanced.pipeline.runtime import Runtime  # noqa: E402


def main():
    out_dir = os.path.join(ROOT, "docs")
    os.makedirs(out_dir, exist_ok=True)
    plan = (("astronaut", 8), ("rocket", 4), ("astronaut", 6), ("coffee", 4), ("chelsea", 4), ("astronaut", 6))
    clip = mk.edited_clip((256, 256), plan)
    rt = Runtime("cpu", show_progress=False)
    faces = analyze_faces(ArrayFrames(clip, 25.0), create_detector("mtcnn", rt), rt, min_face_size=30)
    # timeline
    tw = 96
    cols = 16
    rows = -(-len(clip) // cols)
    sheet = np.full((rows * (tw + 26) + 40, cols * (tw + 4) + 4, 3), 255, np.uint8)
    cv2.putText(sheet, "Every frame of an edited clip: green = lip-synced face, red = cutaway passed through "
                "bit-identical", (6, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (20, 20, 20), 1, cv2.LINE_AA)
    for i, f in enumerate(faces.frames):
        r, c = divmod(i, cols)
        y, x = 40 + r * (tw + 26), 4 + c * (tw + 4)
        th = cv2.resize(clip[i], (tw, tw), interpolation=cv2.INTER_AREA)
        color = (0, 170, 0) if f.face is not None else (220, 30, 30)
        if f.face is not None:
            s = tw / 256.0
            x1, y1, x2, y2 = (int(v * s) for v in f.face.crop_box)
            cv2.rectangle(th, (x1, y1), (x2, y2), (0, 255, 255), 1)
        th[:4], th[-4:], th[:, :4], th[:, -4:] = color, color, color, color
        sheet[y:y + tw, x:x + tw] = th
        label = f"{i}" + (" cut" if i in faces.shot_starts and i > 0 else "")
        cv2.putText(sheet, label, (x + 2, y + tw + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (40, 40, 40), 1, cv2.LINE_AA)
    cv2.imwrite(os.path.join(out_dir, "timeline.jpg"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 85])
    # paste region on a larger frame
    img = mk.photo("astronaut", (512, 512))
    f2 = analyze_faces(ArrayFrames(img[None], 25.0), create_detector("mtcnn", rt), rt, debounce_frames=1)
    face = f2.frames[0].face
    bm = prepare_blend_mask(img, face.crop_box, "feather")
    vis = img.copy()
    x0, y0, x1, y1 = bm.crop_box
    alpha = np.zeros(img.shape[:2], np.float32)
    ys, xs = max(0, y0), max(0, x0)
    alpha[ys:min(512, y1), xs:min(512, x1)] = bm.mask[ys - y0:min(512, y1) - y0, xs - x0:min(512, x1) - x0] / 255.0
    tint = np.array([255, 0, 200], np.float32)
    vis = (vis * (1 - 0.55 * alpha[..., None]) + tint * 0.55 * alpha[..., None]).astype(np.uint8)
    bx = [int(v) for v in face.detection.box]
    cv2.rectangle(vis, (bx[0], bx[1]), (bx[2], bx[3]), (0, 220, 0), 2)
    cb = face.crop_box
    cv2.rectangle(vis, (cb[0], cb[1]), (cb[2], cb[3]), (0, 200, 255), 2)
    for (x, y) in face.detection.landmarks:
        cv2.circle(vis, (int(x), int(y)), 3, (255, 255, 0), -1)
    crop = cv2.resize(vis[max(0, cb[1] - 60):cb[3] + 40, max(0, cb[0] - 60):cb[2] + 60], (360, 400))
    panel = np.full((430, 900, 3), 255, np.uint8)
    panel[10:410, 10:370] = crop
    lines = ["green: detected face (MTCNN, real weights)", "cyan: MuseTalk v1.5 crop box (256x256 to the UNet)",
             "magenta: feathered lower-face blend mask", "", "Only pixels under the mask can change;",
             "everything else in a face frame, and every", "pixel of a cutaway frame, is the source pixel."]
    for i, t in enumerate(lines):
        cv2.putText(panel, t, (390, 60 + 34 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.62, (30, 30, 30), 1, cv2.LINE_AA)
    cv2.imwrite(os.path.join(out_dir, "paste_region.jpg"), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 85])
    # the registry icon (pyproject [tool.comfy] Icon): 400x400
    icon = cv2.resize(mk.photo("astronaut")[0:300, 120:420], (400, 400), interpolation=cv2.INTER_AREA)
    ov = icon.copy()
    for x in range(0, 400, 6):
        h = int(40 * abs(np.sin(x / 23.0)) + 10)
        cv2.line(ov, (x, 360 - h), (x, 360 + h), (255, 80, 200), 4)
    icon = cv2.addWeighted(ov, 0.55, icon, 0.45, 0)
    cv2.putText(icon, "MuseTalk", (18, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (255, 255, 255), 4, cv2.LINE_AA)
    cv2.putText(icon, "Enhanced", (18, 110), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (255, 255, 255), 3, cv2.LINE_AA)
    cv2.imwrite(os.path.join(out_dir, "icon.png"), cv2.cvtColor(icon, cv2.COLOR_RGB2BGR))
    masks_picture(img, face, rt, out_dir)
    edge_face_picture(rt, out_dir)
    print("wrote docs/timeline.jpg, docs/paste_region.jpg, docs/icon.png, docs/masks.jpg, docs/edge_face.jpg")


def _label(img, text, org, scale=0.55):
    """White text on a dark band, readable over any photo."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = org
    cv2.rectangle(img, (x - 4, y - th - 5), (x + tw + 4, y + base + 3), (20, 20, 20), -1)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _frame_alpha(shape, blend_mask):
    """The BlendMask's alpha (0..1) placed in a frame of ``shape`` (the expanded square may leave the frame)."""
    h, w = shape[:2]
    x0, y0, x1, y1 = blend_mask.crop_box
    alpha = np.zeros((h, w), np.float32)
    xs, ys, xe, ye = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if xe > xs and ye > ys:
        alpha[ys:ye, xs:xe] = blend_mask.mask[ys - y0:ye - y0, xs - x0:xe - x0] / 255.0
    return alpha


def masks_picture(img, face, rt, out_dir, side=256):
    """docs/masks.jpg: each blend mode's mask over the face (red, opacity 0.6 x mask), crop box in cyan."""
    box, lm = face.crop_box, face.detection.landmarks
    modes = [("feather", "feather"), ("box", BlendOptions("box")), ("mouth", BlendOptions("mouth")),
             ("mouth, dilate_px=12", BlendOptions("mouth", dilate_px=12))]
    parser = None
    if registry.find("face_parse.bisenet"):
        parser = load_face_parser(rt, auto_download=False)
        modes.append(("jaw (face parser)", "jaw"))
    # the view: the expanded square of the paste-back, clipped to the frame
    h, w = img.shape[:2]
    ex0, ey0, ex1, ey1 = expanded_crop_box(box)
    vx0, vy0, vx1, vy1 = max(0, ex0), max(0, ey0), min(w, ex1), min(h, ey1)
    sx, sy = side / float(vx1 - vx0), side / float(vy1 - vy0)
    gap, top = 8, 40
    sheet = np.full((top + side + 40, gap + len(modes) * (side + gap), 3), 255, np.uint8)
    red = np.array([255, 0, 0], np.float32)
    for k, (name, mode) in enumerate(modes):
        bm = prepare_blend_mask(img, box, mode, parser=parser, landmarks=lm)
        a = 0.6 * _frame_alpha(img.shape, bm)[..., None]
        vis = (img * (1 - a) + red * a).astype(np.uint8)[vy0:vy1, vx0:vx1]
        vis = cv2.resize(vis, (side, side), interpolation=cv2.INTER_AREA)
        cv2.rectangle(vis, (int(round((box[0] - vx0) * sx)), int(round((box[1] - vy0) * sy))),
                      (int(round((box[2] - vx0) * sx)) - 1, int(round((box[3] - vy0) * sy)) - 1), (0, 220, 255), 2)
        _label(vis, name, (8, 22))
        x = gap + k * (side + gap)
        sheet[top:top + side, x:x + side] = vis
    cv2.putText(sheet, f"Blend masks of one face (red: opacity = 0.6 x mask; cyan: crop box; landmarks: "
                f"{face.detection.landmark_kind})", (gap, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (20, 20, 20), 1,
                cv2.LINE_AA)
    note = "Only red pixels can change; the rest of the frame is the source pixel."
    if parser is None:
        note += "  jaw/raw/neck need the BiSeNet face parser weights (not on disk here)."
    cv2.putText(sheet, note, (gap, top + side + 26), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.imwrite(os.path.join(out_dir, "masks.jpg"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 85])


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / float(union) if union > 0 else 0.0


def _best(dets):
    if not dets:
        raise RuntimeError("no face detected")
    return max(dets, key=lambda d: d.score)


def edge_face_picture(rt, out_dir, size=(180, 200)):
    """docs/edge_face.jpg: the astronaut cut so her jaw's leftmost landmarks lie 1-5 px left of the frame; the crop
    box and the network's 256x256 crop with edge_faces=original and with edge_faces=pad."""
    det = create_detector("mtcnn", rt)
    full = mk.photo("astronaut")
    ref = _best(det.detect(full[None])[0])
    ref_box = face_crop_geometry(ref, full.shape[1], full.shape[0], 0, 10, "pad")[0]
    fw, fh = size
    y0 = ref_box[1] - 35
    # step the cut rightwards until the detected jaw (points 0..16) leaves the frame by 1-5 px
    for off in range(0, 12):
        x0 = int(np.floor(ref.landmarks[:17, 0].min())) + off
        frame = np.ascontiguousarray(full[y0:y0 + fh, x0:x0 + fw])
        dets = det.detect(frame[None])[0]
        if dets and -5.0 <= float(_best(dets).landmarks[:17, 0].min()) <= -1.0:
            break
    else:
        raise RuntimeError("no cut puts the jaw 1-5 px outside the frame")
    d = _best(dets)
    ref_shift = (ref_box[0] - x0, ref_box[1] - y0, ref_box[2] - x0, ref_box[3] - y0)
    pad, scale, gap, top = 14, 2.0, 12, 44
    cw, ch = int((fw + 2 * pad) * scale), int((fh + 2 * pad) * scale)
    sheet = np.full((top + 2 * (ch + gap + 22), gap * 3 + cw + 256 + 340, 3), 255, np.uint8)

    def pt(x, y):
        return int(round((x + pad) * scale)), int(round((y + pad) * scale))

    results = {}
    for row, (mode, title) in enumerate((("original", "edge_faces=original"), ("pad", "edge_faces=pad (the default)"))):
        box = face_crop_geometry(d, fw, fh, 0, 10, mode)[0]
        iou = _iou(box, ref_shift)
        results[mode] = (box, iou)
        canvas = np.full((fh + 2 * pad, fw + 2 * pad, 3), 160, np.uint8)
        canvas[pad:pad + fh, pad:pad + fw] = frame
        canvas = cv2.resize(canvas, (cw, ch), interpolation=cv2.INTER_CUBIC)
        cv2.rectangle(canvas, pt(0, 0), pt(fw, fh), (255, 255, 255), 1)
        cv2.rectangle(canvas, pt(*box[:2]), pt(*box[2:]), (0, 220, 255), 3)
        cv2.rectangle(canvas, pt(*ref_shift[:2]), pt(*ref_shift[2:]), (0, 170, 0), 1)
        for (x, y) in d.landmarks:
            cv2.circle(canvas, pt(x, y), 2, (255, 255, 0), -1)
        y = top + row * (ch + gap + 22)
        sheet[y + 22:y + 22 + ch, gap:gap + cw] = canvas
        cv2.putText(sheet, f"({'ac'[row]}) {title}", (gap, y + 16), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5, (20, 20, 20), 1, cv2.LINE_AA)
        crop = crop_face(frame, box)
        x = 2 * gap + cw
        sheet[y + 22:y + 22 + 256, x:x + 256] = crop
        cv2.putText(sheet, f"({'bd'[row]}) 256x256 network input", (x, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (20, 20, 20), 1, cv2.LINE_AA)
        lines = [f"box {box}", f"IoU vs uncut photo's box: {iou:.3f}"]
        lines += (["x1 < 0: the rule falls back to the", "detector box (clipped at 0), a shape",
                   "the network never saw in training"] if mode == "original" else
                  ["box follows the landmarks out of the", "frame; the crop is padded with",
                   "replicated border pixels"])
        for i, t in enumerate(lines):
            cv2.putText(sheet, t, (x + 256 + gap + 4, y + 60 + 26 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.52,
                        (20, 20, 20), 1, cv2.LINE_AA)
    cv2.putText(sheet, f"A face at the frame's left edge (leftmost jaw landmark x = "
                f"{d.landmarks[:17, 0].min():.1f}; {d.landmark_kind}). cyan: crop box, green: the same face's box "
                "on the uncut photo, grey: outside the frame", (gap, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (20, 20, 20), 1, cv2.LINE_AA)
    cv2.imwrite(os.path.join(out_dir, "edge_face.jpg"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"edge face: cut at x={x0}, y={y0}; uncut box shifted {ref_shift}; "
          + "; ".join(f"{m}: box {b} IoU {v:.3f}" for m, (b, v) in results.items()))


if __name__ == "__main__":
    main()
