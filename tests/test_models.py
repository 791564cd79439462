"""The networks match the paper: sizes, parameter counts, dropout placement, skips."""
import pytest
import torch
from conftest import dropout_output_shapes

from p2p.runtime import contract
from p2p.runtime.spec import ModelSpec, SpecError
from p2p.training.models import Discriminator, Generator, MaskDropout, count_parameters, init_weights


def test_paper_parameter_counts():
    spec = ModelSpec.for_task("paired", 256)
    assert spec.depth == 8
    assert round(count_parameters(Generator(spec)) / 1e5) == 544        # 54.4 M
    assert round(count_parameters(Discriminator(6, 64, 70)) / 1e4) == 277  # 2.77 M


@pytest.mark.parametrize("size,depth", [(256, 8), (128, 7), (64, 6)])
def test_depth_follows_size(size, depth):
    assert ModelSpec.for_task("paired", size).depth == depth


def test_dropout_positions_and_sizes():
    spec = ModelSpec.for_task("paired", 256, ngf=8)
    g = Generator(spec)
    seen = dropout_output_shapes(g, torch.randn(1, 3, 256, 256))
    # the first three decoder blocks after the bottleneck: 2x2, 4x4, 8x8 at 256² (paper, original code)
    assert seen == [(1, 64, 2, 2), (1, 64, 4, 4), (1, 64, 8, 8)]
    assert seen == [tuple(s) for s in contract.mask_shapes(spec, 1, 256, 256)]
    assert [isinstance(u.dropout, MaskDropout) for u in g.ups] == [True, True, True] + [False] * 4


def test_first_and_innermost_encoder_layers_have_no_norm():
    g = Generator(ModelSpec.for_task("paired", 64, ngf=8))
    has_norm = [any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules()) for d in g.downs]
    assert has_norm == [False] + [True] * (len(g.downs) - 2) + [False]


def test_unet_skips_concatenate_layer_i_onto_layer_n_minus_i():
    spec = ModelSpec.for_task("paired", 64, ngf=8)
    unet, encdec = Generator(spec), Generator(ModelSpec.for_task("paired", 64, ngf=8, generator="encdec"))
    enc = spec.encoder_channels()
    d = spec.depth
    for k, up in enumerate(unet.ups):
        conv = up.up[1]
        assert conv.in_channels == (enc[d - 1] if k == 0 else 2 * enc[d - 1 - k])
    assert unet.out[1].in_channels == 2 * enc[0]
    assert all(up.up[1].in_channels == enc[d - 1 - k] for k, up in enumerate(encdec.ups))
    assert count_parameters(encdec) < count_parameters(unet)
    # a skip really carries information: zeroing the deepest path still changes the U-Net's output
    x = torch.randn(2, 3, 64, 64)
    masks = [torch.ones(s) for s in contract.mask_shapes(spec, 2, 64, 64)]
    torch.manual_seed(0)
    init_weights(unet)
    base = unet(x, masks)
    x2 = x.clone()
    x2[:, :, :2, :2] += 1.0  # a local change moves the output near it through the shallow skips
    assert (unet(x2, masks) - base)[:, :, :4, :4].abs().max() > 1e-3


@pytest.mark.parametrize("patch,out", [(1, 64), (16, 30), (70, 6), (286, 1)])
def test_patchgan_receptive_fields(patch, out):
    d = Discriminator(6, 8, patch).eval()  # eval: batch statistics would couple all positions
    # output map sizes at 64²; then check the receptive field by gradient support
    x = torch.randn(1, 6, 320, 320, requires_grad=True) if patch == 286 else torch.randn(1, 6, 64, 64, requires_grad=True)
    y = d(x)
    if patch != 286:
        assert y.shape[-1] == out
    c = y.shape[-1] // 2
    y[0, 0, c, c].backward()
    rows = (x.grad[0].abs().sum(0).sum(1) > 0).nonzero()
    assert int(rows.max() - rows.min() + 1) <= patch
    assert int(rows.max() - rows.min() + 1) > patch // 2


def test_masks_make_output_deterministic_and_noise_changes_it():
    spec = ModelSpec.for_task("paired", 64, ngf=8)
    g = Generator(spec)
    x = torch.randn(1, 3, 64, 64)
    ones = [torch.ones(s) for s in contract.mask_shapes(spec, 1, 64, 64)]
    assert torch.equal(g(x, ones), g(x, ones))
    assert not torch.allclose(g(x), g(x))  # dropout is on at test time: the paper's noise


def test_bad_sizes_are_clear():
    with pytest.raises(SpecError, match="does not suit the U-Net.*nearest sizes it takes: --size 96 "):
        ModelSpec.for_task("paired", 100)
    with pytest.raises(SpecError, match="multiples of 64"):
        ModelSpec.for_task("paired", 64).check_size(64, 100)
