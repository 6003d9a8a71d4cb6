"""The one typed request (pipeline/jobs): defaults read from the floor that owns them and written nowhere else,
ranges and choices refused with the field and the fix, and the command line, the server, batch rows and the nodes
all building the same request from the same options (older names included)."""
import ast
import glob
import os

import pytest

from conftest import ROOT


def requests():
    from musetalk_enhanced.pipeline.jobs import DubRequest, PrepareRequest, SpeakRequest

    return (DubRequest, PrepareRequest, SpeakRequest)


def test_defaults_come_from_the_floor_that_owns_them():
    from musetalk_enhanced.pipeline.backends import latentsync_engine
    from musetalk_enhanced.pipeline.backends.selection import DEFAULT_BATCH_SIZE, BackendSpec
    from musetalk_enhanced.pipeline.faces import shots
    from musetalk_enhanced.pipeline.faces.options import FaceOptions
    from musetalk_enhanced.pipeline.jobs import DubRequest, SpeakRequest
    from musetalk_enhanced.pipeline.media import writer

    r = DubRequest()
    assert r.shot_threshold == shots.DEFAULT_THRESHOLD == FaceOptions.shot_threshold
    assert r.batch_size == SpeakRequest().batch_size == DEFAULT_BATCH_SIZE
    assert r.crf == SpeakRequest().crf == writer.DEFAULT_CRF
    assert r.latentsync_steps == BackendSpec.latentsync_steps == latentsync_engine.DEFAULT_STEPS
    assert r.latentsync_guidance == BackendSpec.latentsync_guidance == latentsync_engine.DEFAULT_GUIDANCE
    assert r.seed == latentsync_engine.DEFAULT_SEED
    spec = r.backend_spec()
    assert (spec.choice, spec.posterior, spec.latentsync_steps) == (BackendSpec.choice, BackendSpec.posterior, 20)
    options = r.face_options()
    assert (options.min_face_size, options.extra_margin, options.smooth_boxes) == (50.0, 10, True)


# -- each default written once ---------------------------------------------------------------------------------------
FRONT_ENDS = ["cli.py", "avatar_cli.py", "batch_cli.py", "__main__.py"] + \
    sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "nodes", "*.py")) +
           glob.glob(os.path.join(ROOT, "server", "*.py")))
WIDGET_NAMES = {"deterministic_latents": "sample_latents"}      # node widgets named otherwise than their field


def field_defaults():
    """name -> the defaults of the option and machine fields of that name (older names included)."""
    from musetalk_enhanced.pipeline.jobs.fields import INPUT, specs

    out = {}
    for r in requests():
        for s in specs(r):
            if s.role != INPUT:
                for name in (s.name,) + s.old_names:
                    out.setdefault(name, set()).add(s.default)
    for widget, field in WIDGET_NAMES.items():
        out[widget] = {not d for d in out[field]}
    return out


def literal(node):
    if isinstance(node, ast.Constant) and node.value not in (None, ""):
        return True, node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return True, -node.operand.value
    return False, None


def repeated_defaults(path):
    """Places in ``path`` that write a request field's default as a literal: a node widget's ``"default"``, an
    argparse ``default=``, a function parameter's default."""
    defaults, tree, found = field_defaults(), ast.parse(open(os.path.join(ROOT, path)).read()), []

    def check(name, value_node, where):
        is_literal, value = literal(value_node)
        if is_literal and name in defaults and any(value == d and type(value) is not bool or value is d
                                                   for d in defaults[name]):
            found.append(f"{path}:{value_node.lineno} {where} {name}={value!r}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and isinstance(v, ast.Tuple) and len(v.elts) == 2 and \
                        isinstance(v.elts[1], ast.Dict):
                    for kk, vv in zip(v.elts[1].keys, v.elts[1].values):
                        if isinstance(kk, ast.Constant) and kk.value == "default":
                            check(k.value, vv, "widget")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and \
                str(node.args[0].value).startswith("--"):
            for kw in node.keywords:
                if kw.arg == "default":
                    check(node.args[0].value[2:].replace("-", "_"), kw.value, "flag")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.args + node.args.kwonlyargs
            for a, d in zip(args[len(args) - len(node.args.defaults):], node.args.defaults):
                check(a.arg, d, "parameter")
            for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults):
                if d is not None:
                    check(a.arg, d, "parameter")
    return found


def test_no_front_end_repeats_a_default():
    found = [hit for path in FRONT_ENDS for hit in repeated_defaults(path)]
    assert not found, "defaults written again outside pipeline/jobs: " + "; ".join(found)


def test_the_check_finds_a_repeated_default(tmp_path, monkeypatch):
    """The scan above can fail: a widget, a flag and a parameter repeating 8 / 19 / 27.0 are found."""
    bad = tmp_path / "bad_node.py"
    bad.write_text('X = {"batch_size": ("INT", {"default": 8})}\n'
                   'p.add_argument("--crf", default=19)\n'
                   'def f(shot_threshold=27.0, bbox_shift=-3, deterministic_latents=True): pass\n')
    monkeypatch.setattr("test_jobs.ROOT", str(tmp_path))
    hits = repeated_defaults("bad_node.py")
    assert sorted(h.split(" ", 1)[1] for h in hits) == ["flag crf=19", "parameter deterministic_latents=True",
                                                       "parameter shot_threshold=27.0", "widget batch_size=8"], hits


NOT_FIELDS = {("MuseTalkAvatarSpeak", "loop"), ("MuseTalkAvatarSpeak", "loop_range"),   # "the avatar's own"
              ("MuseTalkUNetSelector", "device")}                                         # a list of common devices
NODE_WIDGETS = {("MuseTalkFaceDetect", "backend"): "detector"}


def test_node_widgets_are_the_fields():
    """Every node widget that is a request option shows the field's default, range and choices."""
    import musetalk_enhanced as pack
    from musetalk_enhanced.pipeline.jobs.fields import INPUT, specs

    by_name = {}
    for r in requests():
        for s in specs(r):
            if s.role != INPUT:
                by_name.setdefault(s.name, s)
    checked = 0
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        inputs = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, decl in inputs.get(section, {}).items():
                field = NODE_WIDGETS.get((node_id, name), WIDGET_NAMES.get(name, name))
                if field not in by_name or (node_id, name) in NOT_FIELDS:
                    continue
                s, (kind, opts) = by_name[field], decl
                if isinstance(kind, str) and kind not in ("INT", "FLOAT", "BOOLEAN", "STRING"):
                    continue                      # a socket (MUSETALK_BACKEND), not a widget
                default = (not s.default) if name in WIDGET_NAMES else s.default
                assert opts["default"] == default, (node_id, name)
                if s.choices:
                    assert list(kind) == list(s.choices), (node_id, name)
                if s.range:
                    assert (opts["min"], opts["max"]) == tuple(s.range), (node_id, name)
                checked += 1
    assert checked >= 25, checked


# -- one request from every front end ------------------------------------------------------------------------------
SAME = [  # (server/JSON options, command-line flags)
    ({}, []),
    ({"batch_size": 4, "crf": 23}, ["--batch-size", "4", "--crf", "23"]),
    ({"steps": 30, "guidance": 2.5}, ["--steps", "30", "--guidance", "2.5"]),
    ({"latentsync_steps": 30, "latentsync_guidance": 2.5}, ["--latentsync-steps", "30", "--latentsync-guidance",
                                                           "2.5"]),
    ({"no_smooth_boxes": True}, ["--no-smooth-boxes"]),
    ({"smooth_boxes": False, "sample_latents": True}, ["--no-smooth-boxes", "--sample-latents"]),
    ({"backend": "musetalk-v1.5", "blend_mode": "feather", "length_policy": "shortest"},
     ["--backend", "musetalk-v1.5", "--blend-mode", "feather", "--length-policy", "shortest"]),
    ({"speaker": "user_box", "user_box": "0.5,0,1,1", "bbox_shift": -7, "min_face_size": 30},
     ["--speaker", "user_box", "--user-box", "0.5,0,1,1", "--bbox-shift", "-7", "--min-face-size", "30"]),
    ({"debounce_frames": 1, "bridge_gap": 0, "shot_threshold": 0, "force_rate": 25},
     ["--debounce-frames", "1", "--bridge-gap", "0", "--shot-threshold", "0", "--force-rate", "25"]),
    ({"dtype": "fp32", "deepcache": True, "compat_int_fps": True, "seed": 7},
     ["--dtype", "fp32", "--deepcache", "--compat-int-fps", "--seed", "7"]),
    ({"encoder": "nvenc", "crf": 21}, ["--encoder", "nvenc", "--crf", "21"]),
]


@pytest.mark.parametrize("options, argv", SAME)
def test_cli_server_and_batch_build_the_same_request(options, argv, tmp_path):
    from musetalk_enhanced import cli
    from musetalk_enhanced.pipeline.jobs import DubRequest
    from musetalk_enhanced.pipeline.jobs.joblist import make_job
    from musetalk_enhanced.pipeline.jobs.flags import given
    from musetalk_enhanced.server.options import build_request

    video, out = str(tmp_path / "v.mp4"), str(tmp_path / "o.mp4")
    from_server = build_request("dub", options, {"video": video}, out)
    args = cli.build_parser().parse_args(["--video", video, "--out", out] + argv)
    from_cli = DubRequest.from_mapping(given(args, DubRequest)).validate()
    cells = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items()}   # CSV text
    from_batch = make_job("row 2", {"video": "v.mp4", "out": "o.mp4", **cells}, str(tmp_path), str(tmp_path), {},
                          {}).request
    assert from_server == from_cli == from_batch
    assert from_server.as_dict() == {**DubRequest(video=video, out=out).validate().as_dict(),
                                     **{k: getattr(from_cli, k) for k in from_cli.as_dict()}}


def test_avatar_commands_and_server_build_the_same_speech():
    from musetalk_enhanced import avatar_cli
    from musetalk_enhanced.pipeline.jobs import SpeakRequest
    from musetalk_enhanced.pipeline.jobs.flags import given
    from musetalk_enhanced.server.options import build_request

    options = {"loop": "forward", "loop_range": "2-5", "batch_size": 3}
    from_server = build_request("avatar", options, {"avatar": "host", "audio": "v.wav"}, "o.mp4")
    args = avatar_cli.build_parser().parse_args(["speak", "--name", "host", "--audio", "v.wav", "--out", "o.mp4",
                                                 "--loop", "forward", "--loop-range", "2-5", "--batch-size", "3"])
    assert from_server == SpeakRequest.from_mapping(given(args, SpeakRequest)).validate()
    assert from_server.loop == "forward" and from_server.batch_size == 3


@pytest.mark.parametrize("values, field, words, fix", [
    ({"batch_size": 0}, "batch_size", "0 is out of range", "1 to 256"),
    ({"batch_size": 2.5}, "batch_size", "whole number", "1 to 256"),
    ({"bbox_shift": 1000000000}, "bbox_shift", "out of range", "-100 to 100"),
    ({"extra_margin": -1000000000}, "extra_margin", "out of range", "0 to 200"),
    ({"backend": "magic"}, "backend", "not a choice", "musetalk-v1.5"),
    ({"smooth_boxes": "maybe"}, "smooth_boxes", "is a switch", "true or false"),
    ({"latentsync_guidance": "nan"}, "latentsync_guidance", "not a finite number", "1 to 5"),
    ({"speaker": "user_box"}, "user_box", "no box was given", ""),
    ({"out": "o.mov"}, "out", "not an .mp4", ".mp4"),
    ({"video": ""}, "video", "is required", "video"),
    ({"video": "clip.mp4\x00.txt"}, "video", "NUL", "plain file name"),
])
def test_a_bad_request_names_the_field_and_the_fix(values, field, words, fix):
    from musetalk_enhanced.pipeline.jobs import DubRequest, RequestError

    with pytest.raises(RequestError) as info:
        DubRequest.from_mapping({"video": "v.mp4", "out": "o.mp4", **values}).validate()
    assert info.value.field == field and words in info.value.message and fix in info.value.fix, info.value


def test_openapi_options_are_the_fields():
    from musetalk_enhanced.pipeline.backends.selection import BACKEND_CHOICES
    from musetalk_enhanced.pipeline.jobs import DubRequest, SpeakRequest
    from musetalk_enhanced.pipeline.jobs.schema import options_schema

    props = options_schema(DubRequest)["properties"]
    assert props["backend"]["enum"] == list(BACKEND_CHOICES) and props["backend"]["default"] == "auto"
    assert (props["batch_size"]["minimum"], props["batch_size"]["maximum"], props["batch_size"]["type"]) == \
        (1, 256, "integer")
    assert props["steps"]["deprecated"] and props["latentsync_steps"]["default"] == 20
    assert props["no_smooth_boxes"]["type"] == "boolean" and props["smooth_boxes"]["default"] is True
    assert not {"video", "audio", "out", "device", "auto_download"} & set(props)
    speak = options_schema(SpeakRequest)["properties"]
    assert speak["loop"]["nullable"] and "avatar" not in speak


def test_run_checks_the_output_before_any_work(tmp_path):
    from musetalk_enhanced.pipeline.jobs import DubRequest, RequestError, run

    with pytest.raises(RequestError, match="does not exist") as info:
        run(DubRequest(video="never-opened.mp4", out=str(tmp_path / "no" / "such" / "o.mp4")))
    assert info.value.field == "out"
    (tmp_path / "o.mp4").write_bytes(b"mine")
    with pytest.raises(RequestError, match="already exists"):
        run(DubRequest(video="never-opened.mp4", out=str(tmp_path / "o.mp4")))
    assert (tmp_path / "o.mp4").read_bytes() == b"mine"


def test_legal_but_extreme_values_are_warned_about():
    from musetalk_enhanced.pipeline.jobs import DubRequest
    from musetalk_enhanced.pipeline.jobs.run import extreme_value_warnings
    from musetalk_enhanced.pipeline.types import Detection, Face, FaceSequence, FrameFaces

    face = Face(Detection((10.0, 20.0, 90.0, 120.0), 0.99), 0, (0, 0, 100, 140))          # 100 px high
    faces = FaceSequence(frames=[FrameFaces(0, 0, face), FrameFaces(1, 0, None)], fps=25.0, width=200, height=200)
    assert extreme_value_warnings(DubRequest(bbox_shift=-20, extra_margin=10), faces) == []
    warned = extreme_value_warnings(DubRequest(bbox_shift=-60, extra_margin=20), faces)
    assert len(warned) == 1 and warned[0].startswith("bbox_shift -60 px is 60% of the faces' height (100 px)")
    cutaways = FaceSequence(frames=[FrameFaces(0, 0, None)], fps=25.0, width=200, height=200)
    assert extreme_value_warnings(DubRequest(bbox_shift=100), cutaways) == []
    assert len(extreme_value_warnings(DubRequest(extra_margin=40), faces)) == 1


def test_machine_settings_reach_the_runtime_and_a_server_job_cannot_set_them(tmp_path):
    """frame_ops and compile are the machine's: the command line sets them on the runtime (and on the backend spec a
    node or a shard worker makes its runtime from); a server job naming them is refused."""
    from musetalk_enhanced.pipeline.jobs import DubRequest, RequestError
    from musetalk_enhanced.pipeline.jobs.run import make_runtime
    from musetalk_enhanced.server.errors import ApiError
    from musetalk_enhanced.server.options import build_request

    video, out = str(tmp_path / "v.mp4"), str(tmp_path / "o.mp4")
    r = DubRequest(video=video, out=out, device="cpu", frame_ops="torch", compile="compile").validate()
    runtime = make_runtime(r, show_progress=False)
    assert (runtime.frame_ops, runtime.compile, runtime.device_frames) == ("torch", "compile", True)
    assert (r.backend_spec().frame_ops, r.backend_spec().compile) == ("torch", "compile")
    plain = make_runtime(DubRequest(video=video, out=out, device="cpu").validate(), show_progress=False)
    assert (plain.frame_ops, plain.compile, plain.device_frames) == ("auto", "off", False)   # auto: cv2 on a CPU
    for name, value in (("frame_ops", "torch"), ("compile", "compile")):
        with pytest.raises(ApiError) as e:
            build_request("dub", {name: value}, {"video": video}, out)
        assert e.value.status == 400 and name in e.value.field
    with pytest.raises(RequestError) as e:
        DubRequest(video=video, out=out, frame_ops="gpu").validate()
    assert e.value.field == "frame_ops" and "torch" in str(e.value)
