"""Oracles for what the timestep-sampler tests left open (issue 27, mutation testing of
``objectives/timesteps.py``): uniform until every step (step 1 included) has ``history`` values, the
documented defaults (improved-diffusion's 10 values and 0.001 of uniform), draws in 1..T from the given
generator with weights 1 / (T p_t), and a state that survives a save and load."""
import torch

from conftest import gen
from ddpmlab.objectives.timesteps import ImportanceTimesteps

T = 5


def fed(sampler: ImportanceTimesteps, rounds: int, skip: int | None = None, seed: int = 0) -> ImportanceTimesteps:
    """``rounds`` batches holding every step once (but ``skip``), losses growing with t."""
    g = gen(seed)
    steps = torch.tensor([t for t in range(1, sampler.T + 1) if t != skip])
    for _ in range(rounds):
        sampler.update(steps, steps.double() * (1 + 0.1 * torch.rand(len(steps), generator=g, dtype=torch.float64)))
    return sampler


def test_uniform_until_every_step_has_history_values():
    fresh = ImportanceTimesteps(T, history=3)
    p = fresh.probs()
    assert p.dtype == torch.float64 and p.tolist() == [1.0 / T] * T
    assert fed(ImportanceTimesteps(T, history=3), 10, skip=1).probs().tolist() == [1.0 / T] * T  # step 1 short
    assert fed(ImportanceTimesteps(T, history=3), 2).probs().tolist() == [1.0 / T] * T  # 2 < 3 values each
    assert fed(ImportanceTimesteps(T, history=3), 3).probs().tolist() != [1.0 / T] * T


def test_the_defaults_are_ten_values_and_a_thousandth_of_uniform():
    s = fed(ImportanceTimesteps(T), 9)
    assert s.probs().tolist() == [1.0 / T] * T
    fed(s, 1)
    w = s.second_moment[1:].sqrt()
    torch.testing.assert_close(s.probs(), 0.999 * w / w.sum() + 0.001 / T, rtol=1e-12, atol=0)


def test_draws_lie_in_1_to_T_follow_p_and_carry_weight_one_over_T_p():
    s = ImportanceTimesteps(T, history=1, uniform_prob=0.05)
    s.update(torch.arange(1, T + 1), torch.tensor([0.1, 0.1, 0.1, 0.1, 20.0], dtype=torch.float64))
    p = s.probs()
    t, w = s.sample(4000, gen(1))
    assert int(t.min()) >= 1 and int(t.max()) <= T
    freq = torch.bincount(t, minlength=T + 1)[1:].double() / len(t)
    assert (freq - p).abs().max() < 4.5 * (p * (1 - p) / len(t)).sqrt().max()
    torch.testing.assert_close(w, (1.0 / (T * p[t - 1])).float())


def test_draws_come_from_the_given_generator():
    s = fed(ImportanceTimesteps(T, history=2), 2)
    assert torch.equal(s.sample(50, gen(3))[0], s.sample(50, gen(3))[0])


def test_the_state_survives_a_save_and_load():
    s = fed(ImportanceTimesteps(T, history=2), 3, seed=4)
    state = s.state_dict()
    assert state["counts"].dtype == torch.long and state["counts"].tolist() == [0] + [3] * T
    t = ImportanceTimesteps(T, history=2)
    t.load_state_dict(state)
    assert torch.equal(t.second_moment, s.second_moment) and torch.equal(t.counts, s.counts)
    assert torch.equal(t.probs(), s.probs())
    fed(s, 1, seed=5)  # the saved state is a copy: later updates leave it as it was
    assert state["counts"].tolist() == [0] + [3] * T
