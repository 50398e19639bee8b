"""The YAML search space becomes the Tune space it says, for every preset."""
from __future__ import annotations

import pytest
from ray.tune.search.sample import Categorical, Float, Integer

from orchestrator.config import load_config
from orchestrator.search import longest_trial, make_scheduler, make_searcher, paper_defaults, to_tune_space


@pytest.mark.parametrize("modality,preset", [("pet", "full"), ("ct", "full"), ("pet", "smoke")])
def test_every_preset_space_converts_and_samples_inside_its_bounds(modality, preset):
    space = load_config(modality, preset).search.space
    tune_space = to_tune_space(space)
    assert tune_space.keys() == space.keys()
    for name, domain in tune_space.items():
        spec = space[name]
        for value in domain.sample(size=200, random_state=0):
            if spec["type"] == "choice":
                assert value in spec["values"], name
            else:
                assert spec["low"] <= value <= spec["high"], name


def test_int_ranges_include_both_ends():
    domain = to_tune_space({"n_critic": {"type": "int", "low": 1, "high": 3}})["n_critic"]
    assert isinstance(domain, Integer)
    assert set(domain.sample(size=300, random_state=0)) == {1, 2, 3}


def test_distribution_kinds():
    space = to_tune_space({"lr_g": {"type": "loguniform", "low": 1e-5, "high": 1e-3},
                           "gp_lambda": {"type": "uniform", "low": 5, "high": 15},
                           "arch": {"type": "choice", "values": ["dcgan", "cgan"]}})
    assert isinstance(space["lr_g"], Float) and isinstance(space["gp_lambda"], Float)
    assert isinstance(space["arch"], Categorical)


def test_the_first_point_is_the_papers_settings_where_the_space_allows():
    space = load_config("pet").search.space
    assert paper_defaults(space) == {"arch": "cgan", "lr_g": 1e-4, "lr_d": 4e-4, "gp_lambda": 10.0,
                                     "n_critic": 5, "epochs": 500, "batch_size": 32}
    assert paper_defaults({"epochs": {"type": "int", "low": 1, "high": 2}}) == {}


def test_searcher_is_built_for_the_ranking_metric():
    searcher = make_searcher(load_config("pet", "smoke").search)
    assert searcher.max_concurrent == 1
    assert searcher.searcher.metric == "ssim" and searcher.searcher.mode == "max"


def test_asha_never_stops_a_trial_at_its_natural_end():
    """The full preset searches 500-1000 epochs: ASHA must let the 1000-epoch trials run to the end."""
    search = load_config("pet", "full").search
    assert longest_trial(search.space, epochs=500) == 1000
    assert make_scheduler(search, epochs=500)._max_t == 1001
    smoke = load_config("pet", "smoke")
    assert longest_trial(smoke.search.space, smoke.gan.epochs) == smoke.gan.epochs
    assert longest_trial({"epochs": {"type": "choice", "values": [3, 9, 5]}}, epochs=1) == 9
