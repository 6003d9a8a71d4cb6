"""The MuseTalk networks' speed-ups are the same computation: channels_last, SDPA attention (diffusers'
AttnProcessor2_0, what the original's diffusers picks) against the classic attention, and ``compile`` (torch.compile
at one batch shape, pipeline/backends/musetalk_engine.py ``FixedShapeCall``), each against the plain fp32 networks
on the CPU. The compile test builds a two-block UNet (the small test configuration; the full networks take minutes
to compile) and checks that a smaller batch is padded into the graph already compiled, not compiled again."""
import pytest
import torch

from musetalk_enhanced.models.musetalk_unet import build_unet
from musetalk_enhanced.models.vae import build_vae
from musetalk_enhanced.pipeline.backends.musetalk_engine import FixedShapeCall, MuseTalkEngine
from musetalk_enhanced.pipeline.runtime import Runtime
from test_lipsync import UNET_SMALL, VAE_SMALL

UNET_TWO_BLOCKS = dict(UNET_SMALL, block_out_channels=[16, 32], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                       up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"])


def _engine(unet_config=UNET_SMALL, **kw):
    torch.manual_seed(0)
    runtime = Runtime("cpu", torch.float32, show_progress=False)
    return MuseTalkEngine(build_unet(unet_config), build_vae(VAE_SMALL), None, runtime, posterior="mode", **kw)


def _inputs(n=3):
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (2, 256, 256, 3), dtype=torch.uint8, generator=g),
            torch.randn(n, 8, 32, 32, generator=g), torch.randn(n, 50, 384, generator=g))


def _outputs(engine, crops, latents, windows):
    pred = engine.denoise(latents, windows)
    return engine.encode_reference(crops), pred, engine.decode(pred)


def _close(got, want, what):
    for name, a, b in zip(("encode", "unet", "decode"), got, want):
        scale = float(b.abs().max())
        assert float((a.float() - b.float()).abs().max()) <= 1e-4 * max(1.0, scale), f"{what}: {name} differs"


def test_channels_last_is_the_same_computation():
    crops, latents, windows = _inputs()
    plain = _engine(channels_last=False)
    fast = _engine(channels_last=True)
    assert not plain.channels_last and fast.channels_last
    assert next(fast.unet.parameters()).dim() == 1 or any(
        p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
        for p in fast.unet.parameters())
    _close(_outputs(fast, crops, latents, windows), _outputs(plain, crops, latents, windows), "channels_last")


def test_attention_is_sdpa_and_equals_the_classic_attention():
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    crops, latents, windows = _inputs()
    engine = _engine()
    for net in (engine.unet, engine.vae):
        kinds = {type(p) for p in net.attn_processors.values()}
        assert kinds == {AttnProcessor2_0}, f"{type(net).__name__} attention: {kinds}"
    sdpa = _outputs(engine, crops, latents, windows)
    engine.unet.set_attn_processor(AttnProcessor())
    engine.vae.set_attn_processor(AttnProcessor())
    _close(_outputs(engine, crops, latents, windows), sdpa, "classic attention")


def test_compiled_networks_equal_the_plain_ones_at_one_batch_shape():
    from torch._dynamo.utils import counters

    crops, latents, windows = _inputs(3)
    engine = _engine(UNET_TWO_BLOCKS)
    plain = _outputs(engine, crops, latents, windows)
    engine.runtime.compile = "compile"
    compiled = _outputs(engine, crops, latents, windows)
    _close(compiled, plain, "compile")
    calls = {name: engine._compiled[(name, "compile")] for name in ("encode", "unet", "decode")}
    assert all(isinstance(c, FixedShapeCall) and not c.failed for c in calls.values())
    assert calls["unet"].batch == calls["decode"].batch == 3
    graphs = counters["stats"]["unique_graphs"]
    smaller = engine.denoise(latents[:2], windows[:2])          # the last batch of a run: padded, not recompiled
    assert counters["stats"]["unique_graphs"] == graphs
    assert smaller.shape[0] == 2
    assert float((smaller - plain[1][:2]).abs().max()) <= 1e-4 * max(1.0, float(plain[1].abs().max()))
    engine.runtime.compile = "off"                              # and back: the plain calls again
    assert torch.equal(engine.denoise(latents, windows), plain[1])


def test_a_failed_compile_runs_uncompiled_and_says_so():
    said = []

    def broken(x):
        raise RuntimeError("no C++ compiler")

    call = FixedShapeCall(lambda x: x * 2, "compile", said.append)
    call.fn = broken
    x = torch.arange(4.0)
    assert torch.equal(call(x), x * 2) and call.failed
    assert torch.equal(call(x), x * 2) and len(said) == 1 and "uncompiled" in said[0]
    oom = FixedShapeCall(lambda x: x, "compile", said.append)
    oom.fn = lambda x: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(torch.cuda.OutOfMemoryError):             # out of memory goes on to the batch halving
        oom(x)
