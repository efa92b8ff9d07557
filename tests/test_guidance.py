"""Classifier-free guidance (issue 14) against the exact conditional oracle of labelled mixtures: the guided
score against its closed form written out by hand, W = 0 sampling against the true conditional's moments
for every sampler, the batched guidance against two plain calls, label dropout's draws."""
import math

import numpy as np
import pytest
import torch

import ddpmlab as dl
from ddpmlab.core.distributions import GaussianMixture, seed_mixture
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.conditional_oracle import LabelledMixtureOracle, class_posterior
from ddpmlab.models.guidance import Guided, drop_labels
from ddpmlab.models.mlp import MLPDenoiser
from conftest import gen

TWO = GaussianMixture([0.3, 0.7], [[-3.0], [2.0]], [0.5, 1.0])  # 1-D, well separated


def _guided_score_by_hand(x, abar, c, w, weights=(0.3, 0.7), means=(-3.0, 2.0), variances=(0.5, 1.0)):
    """s(x | c) + w (s(x | c) - s(x)) for the diffused 1-D mixture, in numpy: component k of q(x_t) is
    N(sqrt(abar) mu_k, abar v_k + 1 - abar)."""
    m = [math.sqrt(abar) * mu for mu in means]
    v = [abar * vk + 1 - abar for vk in variances]
    dens = np.stack([wk * np.exp(-(x - mk) ** 2 / (2 * vk)) / np.sqrt(2 * np.pi * vk)
                     for wk, mk, vk in zip(weights, m, v)])
    comp_scores = np.stack([-(x - mk) / vk for mk, vk in zip(m, v)])
    s_uncond = (dens * comp_scores).sum(0) / dens.sum(0)
    s_cond = comp_scores[c, np.arange(x.size)]
    return s_cond + w * (s_cond - s_uncond)


@pytest.mark.parametrize("w", [0.0, 1.0, 3.0])
def test_guided_oracle_score_matches_closed_form_on_a_grid(w):
    oracle = LabelledMixtureOracle(TWO, dl.make_schedule("linear", 100))
    guided = Guided(oracle, w)
    x = np.linspace(-6, 6, 61)
    labels = np.arange(x.size) % 2  # both classes in one batch
    for abar in (0.999, 0.7, 0.2, 0.01):
        got = guided.score(torch.tensor(x)[:, None], 50.0, abar, cond=torch.tensor(labels))[:, 0].numpy()
        np.testing.assert_allclose(got, _guided_score_by_hand(x, abar, labels, w), rtol=1e-6, atol=1e-6)


def test_guided_reverse_step_is_eq_6_at_integer_steps():
    """At a paper step, the guided eps is (1 + w) eps(c) - w eps(null), eps = -sqrt(1 - abar) score, and the
    mean, x_0 and eps are one consistent reverse step (eq. 4 and 7)."""
    sched = dl.make_schedule("linear", 100)
    oracle, w, t = LabelledMixtureOracle(TWO, sched), 2.0, 37
    x = torch.linspace(-5, 5, 21, dtype=torch.float64)[:, None]
    labels = torch.arange(21) % 2
    p = Guided(oracle, w).p_mean_variance(x, torch.full((21,), t), labels)
    abar = float(sched.alphas_cumprod[t])
    expected = -math.sqrt(1 - abar) * _guided_score_by_hand(x[:, 0].numpy(), abar, labels.numpy(), w)
    np.testing.assert_allclose(p.pred_eps[:, 0].numpy(), expected, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(p.pred_x0 * math.sqrt(abar) + p.pred_eps * math.sqrt(1 - abar), x)
    coef1, coef2 = sched.posterior_mean_coef1[t], sched.posterior_mean_coef2[t]
    torch.testing.assert_close(p.mean, coef1 * p.pred_x0 + coef2 * x)
    torch.testing.assert_close(p.variance, oracle.p_mean_variance(x, torch.full((21,), t), labels).variance)


@pytest.mark.parametrize("sampler, options, steps", [
    ("ancestral", {}, 0), ("ddim", {}, 50), ("ode", {"solver": "dpm_solver"}, 50), ("ode", {"solver": "heun"}, 25),
    ("ode", {"solver": "rk45"}, 10)])
def test_guided_oracle_at_w0_samples_the_true_conditional(sampler, options, steps):
    """W = 0: the guided oracle is the exact conditional; its samples' mean and variance per class match
    N(mu_c, v_c) within 4 Monte-Carlo standard errors (plus 0.01 of discretisation for the ODE solvers)."""
    oracle = LabelledMixtureOracle(TWO, dl.make_schedule("cosine", 100))  # abar_T ~ 0: x_T ~ N(0, I) is q(x_T)
    n = 4000 if options.get("solver") in ("heun", "rk45") else 20_000
    labels = torch.arange(n) % 2
    x = dl.sample(Guided(oracle, 0.0), n, sampler=sampler, steps=steps, generator=gen(3), cond=labels, **options)
    slack = 0.0 if sampler == "ancestral" else 0.01
    for c in (0, 1):
        xc = x[labels == c, 0].double()
        mu, var = TWO.means[c, 0].item(), TWO.covariances[c, 0, 0].item()
        m = xc.numel()
        assert abs(xc.mean().item() - mu) < 4 * math.sqrt(var / m) + slack, (c, xc.mean().item())
        assert abs(xc.var().item() - var) < 4 * var * math.sqrt(2 / (m - 1)) + slack, (c, xc.var().item())


def test_guidance_pushes_samples_away_from_the_other_class():
    """With overlapping classes, W > 0 samples a law proportional to q(x | c) q(c | x)^w: the fraction the
    exact posterior assigns to c grows with w, and the oracle at W = 0 has exactly the true fraction."""
    mix = GaussianMixture([0.5, 0.5], [[-1.0], [1.0]], [1.0, 1.0])
    oracle = LabelledMixtureOracle(mix, dl.make_schedule("cosine", 100))
    labels = torch.zeros(4000, dtype=torch.long)
    acc = [class_posterior(mix, dl.sample(Guided(oracle, w), 4000, generator=gen(5), cond=labels)).argmax(1)
           .eq(0).double().mean().item() for w in (0.0, 1.0, 3.0)]
    true_acc = 0.8413447  # P(x < 0 | c = 0) = Phi(1)
    assert abs(acc[0] - true_acc) < 4 * math.sqrt(true_acc * (1 - true_acc) / 4000)
    assert acc[0] < acc[1] < acc[2]


def test_batched_guidance_equals_two_plain_calls_of_a_conditional_network():
    torch.manual_seed(0)
    net = MLPDenoiser(2, width=16, depth=1, num_classes=3)
    model = dl.DiffusionModel(net, dl.make_schedule("linear", 50), data_shape=(2,)).double()
    x, t, c = torch.randn(6, 2, dtype=torch.float64), torch.full((6,), 20), torch.tensor([0, 1, 2, 0, 1, 2])
    w = 1.5
    p = Guided(model, w).p_mean_variance(x, t, c)
    pc, pu = model.p_mean_variance(x, t, c), model.p_mean_variance(x, t, torch.full((6,), 3))
    torch.testing.assert_close(p.pred_eps, (1 + w) * pc.pred_eps - w * pu.pred_eps)
    torch.testing.assert_close(p.mean, (1 + w) * pc.mean - w * pu.mean)
    s = Guided(model, w).score(x, 20.0, float(model.schedule.alphas_cumprod[20]), c)
    torch.testing.assert_close(s, -p.pred_eps / (1 - model.schedule.alphas_cumprod[20]).sqrt())
    # None is the null class
    torch.testing.assert_close(model.p_mean_variance(x, t).mean, pu.mean)
    out = dl.sample(Guided(model, w), 7, sampler="ddim", steps=5, generator=gen(0), cond=1)
    assert out.shape == (7, 2) and bool(torch.isfinite(out).all())


def test_guidance_refuses_unconditional_models_and_bad_input():
    uncond = dl.DiffusionModel(MLPDenoiser(1, width=8, depth=1), dl.make_schedule("linear", 10))
    with pytest.raises(DDPMLabError, match="unconditional"):
        Guided(uncond, 1.0)
    with pytest.raises(DDPMLabError, match="unconditional"):
        uncond.p_mean_variance(torch.zeros(2, 1), torch.full((2,), 3), torch.tensor([0, 1]))
    oracle = LabelledMixtureOracle(TWO, dl.make_schedule("linear", 10))
    with pytest.raises(DDPMLabError, match=">= 0"):
        Guided(oracle, -1.0)
    with pytest.raises(DDPMLabError, match="condition"):
        dl.sample(Guided(oracle, 1.0), 4)
    with pytest.raises(DDPMLabError, match="class labels"):
        dl.sample(Guided(oracle, 1.0), 4, cond=torch.tensor([0, 1, 5, 0]))
    with pytest.raises(DDPMLabError, match="class labels"):
        MLPDenoiser(1, width=8, depth=1, num_classes=2)(torch.zeros(2, 1), torch.ones(2), torch.tensor([0, 3]))


def test_sample_labelled_is_sample_with_its_components():
    mix = seed_mixture()
    x, k = mix.sample_labelled(500, gen(4))
    assert torch.equal(x, mix.sample(500, gen(4)))
    assert k.dtype == torch.long and set(k.tolist()) == {0, 1}
    # each point lies near its component's mean (separated components)
    assert bool(((x[:, 0] > 0) == (k == 1)).float().mean() > 0.99)
    assert torch.equal(mix.component(1).means, mix.means[1:])


def test_drop_labels_draws_from_the_generator_and_only_when_asked():
    labels = torch.zeros(20_000, dtype=torch.long)
    g = gen(7)
    state = g.get_state()
    assert drop_labels(labels, 0.0, 2, g) is labels and torch.equal(g.get_state(), state)
    dropped = drop_labels(labels, 0.2, 2, g)
    assert set(dropped.tolist()) == {0, 2}
    frac = (dropped == 2).double().mean().item()
    assert abs(frac - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 20_000)
    assert torch.equal(dropped, drop_labels(labels, 0.2, 2, gen(7)))


@pytest.mark.parametrize("arch", ["mlp", "unet"])
def test_conditional_networks_read_labels_and_none_is_the_null_class(arch):
    from ddpmlab.models.unet import UNet

    torch.manual_seed(0)
    if arch == "mlp":
        net, x = MLPDenoiser(2, width=16, depth=1, num_classes=3), torch.randn(4, 2)
    else:
        net, x = UNet(1, 1, base=8, time_dim=8, num_classes=3), torch.randn(4, 1, 8, 8)
        with torch.no_grad():  # the U-Net's residual branches and last layer start at zero
            for p in net.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen(7)))
    tau = torch.full((4,), 0.5)
    outs = [net(x, tau, torch.full((4,), c)) for c in range(4)]
    assert all(not torch.allclose(outs[i], outs[j]) for i in range(4) for j in range(i))
    torch.testing.assert_close(net(x, tau), outs[3])  # no condition = the null class 3
    with pytest.raises(DDPMLabError, match="class labels"):
        net(x, tau, torch.full((4,), 4))


def test_per_class_evaluation_of_the_exact_model_scores_the_floor():
    """The exact conditional oracle evaluated as if it were a trained model: at w = 0 its W1 to the true
    conditional is within a few floors, the exact posterior picks the requested class, mean and std match."""
    from ddpmlab.evaluation.guidance import evaluate_classes

    dist = seed_mixture()
    exact = LabelledMixtureOracle(dist, dl.make_schedule("cosine", 100))
    rep = evaluate_classes(exact, dist, [0, 1], 0.0, 4000, gen(11), oracle=False, n_ref=20_000)
    for c, r in rep.items():
        assert r["model"]["w1"] < 3 * r["floor"] + 0.02 and r["model"]["accuracy"] > 0.995
        assert abs(r["model"]["mean"] - r["true"]["mean"]) < 0.07 and abs(r["model"]["std"] - 1.0) < 0.05
    with pytest.raises(DDPMLabError, match="out of range"):
        evaluate_classes(exact, dist, [2], 0.0, 10, gen(0))
