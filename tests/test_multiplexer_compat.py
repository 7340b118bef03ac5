"""BelugaMultiplexer's forward is the published one: the positional channel built with the published
encoding, blocks wired one -> two -> three -> four -> five, six(three + five), final(two + six), and the
output reshaped channel c = f * 4 + b to [B, F, 4, L]."""

from __future__ import annotations

import pytest
import torch

from pipeline.models import BelugaMultiplexer, ConvMultiplexer


def published_forward(m: ConvMultiplexer, x: torch.Tensor) -> torch.Tensor:
    """The published forward, written from its description (encoding by float aranges)."""
    encoding = torch.cat((torch.arange(0, 1, 0.001), torch.arange(1, 0, -0.001))).unsqueeze(0)
    encoding = encoding.repeat(x.shape[0], 1, 1)
    x = torch.cat((x, encoding), dim=1)
    one = m.model_one(x)
    two = m.model_two(one)
    three = m.model_three(two)
    five = m.model_five(m.model_four(three))
    six = m.model_six(three + five)
    out = m.model_final(two + six)
    return torch.reshape(out, (out.shape[0], m.n_targets, 4, 2000))


def random_onehot(batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.one_hot(torch.randint(0, 4, (batch, 2000), generator=g), 4).permute(0, 2, 1).float()


def test_narrow_beluga_wiring_matches_the_published_forward():
    torch.manual_seed(0)
    model = ConvMultiplexer(2000, 3, width1=6, width2=8, kernel_size=8, dilations=(4, 16, 64, 16, 4)).eval()
    X = random_onehot(2)
    with torch.no_grad():
        ours, theirs = model(X), published_forward(model, X)
    assert ours.shape == (2, 3, 4, 2000)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_output_channel_order_is_target_major():
    """Channel c of the final convolution is effect (f, b) with c = 4 f + b."""
    torch.manual_seed(0)
    model = ConvMultiplexer(2000, 2, width1=4, width2=4).eval()
    with torch.no_grad():
        final = model.model_final[-1]
        final.weight.zero_()
        final.bias.copy_(torch.arange(8, dtype=torch.float32))
        y = model(random_onehot(1))
    for f in range(2):
        for b in range(4):
            assert torch.all(y[0, f, b] == 4 * f + b)


@pytest.mark.slow
def test_full_beluga_multiplexer_matches_the_published_forward():
    torch.manual_seed(0)
    model = BelugaMultiplexer().eval()
    X = random_onehot(1)
    with torch.no_grad():
        ours, theirs = model(X), published_forward(model, X)
    assert ours.shape == (1, 2002, 4, 2000)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
