"""End to end: `python -m orchestrator.sweep pet --preset smoke` against a real MLflow server."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import mlflow
import mlflow.pytorch
import pytest
import torch
import yaml

from orchestrator.data.phantom import make_patients
from orchestrator.reproduce import main as reproduce_main
from orchestrator.reproduce import trial_run_id
from orchestrator.config import load_config
from orchestrator.sweep import main as sweep_main
from orchestrator.sweep import PARENT_PARAMS, run_sweep, ui_questions
from orchestrator.tracking import compact, runs_page
from trainables.classify.arms import Arm
from browser import rendered_dom, screenshot
from sweeps import (EPOCHS, kill_process_group, start_sweep_process, steps, sweep_args, sweep_overrides, sweep_runs,
                    wait_for)


# Loads a registered generator with this repository's package made unimportable (the editable
# install's finder removed, the checkout off sys.path): argv = tracking URI, model URI.
LOAD_WITHOUT_THE_PACKAGE = """
import importlib.util, sys
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path[:] = [p for p in sys.path if p not in ("", ".")]
assert importlib.util.find_spec("trainables") is None, "the package is still importable"
import mlflow, mlflow.pytorch, torch
mlflow.set_tracking_uri(sys.argv[1])
sampler = mlflow.pytorch.load_model(sys.argv[2])
print(sys.modules["trainables.gan.models"].__file__, str(tuple(sampler(torch.randn(2, sampler.latent_dim),
      torch.tensor([0, 1])).shape)).replace(" ", ""))
"""


@pytest.mark.slow
def test_smoke_sweep_records_every_trial_in_mlflow(mlflow_server, tmp_path, capsys):
    assert sweep_main(sweep_args(tmp_path, mlflow_server, trials=4)) == 0

    client, parents, children = sweep_runs(mlflow_server, tmp_path)
    (parent,) = parents
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["dataset_fingerprint"] and parent.data.params["search.metric"] == "ssim"
    # MLflow's UI opens a model-training experiment on its runs table
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.data.params["search.gpus_per_worker"] == "0.0"  # resolved at the start, recorded
    # a few params to filter sweeps by; the whole config as one file
    assert set(parent.data.params) == set(PARENT_PARAMS)
    saved = yaml.safe_load(Path(client.download_artifacts(parent.info.run_id, "config.yaml", str(tmp_path)))
                           .read_text())
    assert saved["gan"]["epochs"] == EPOCHS and saved["search"]["num_samples"] == 4
    assert len(children) == 4
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        # where it comes from and what it is, as MLflow's UI shows them (Source, User, Git commit, Description)
        assert child.data.tags["mlflow.source.git.commit"] == parent.data.tags["mlflow.source.git.commit"] != ""
        assert child.data.tags["mlflow.user"] and child.data.tags["mlflow.source.name"] == "orchestrator.sweep"
        assert child.data.tags["mlflow.note.content"].startswith(f"Stage-1 GAN trial `{child.info.run_name}`")
        # a name that says what the run is: architecture, what it drew, its trial
        trial = json.loads(Path(client.download_artifacts(child.info.run_id, "trial_config.json", str(tmp_path)))
                           .read_text())
        assert child.info.run_name == (f"gan {trial['arch']} lr_g={compact(trial['lr_g'])} "
                                       f"({child.data.tags['medgan.trial_id']})")
        assert len(client.get_metric_history(child.info.run_id, "ssim")) == EPOCHS
        # the sample grid in the run's image view: key "samples", the epoch as step, the untrained one at 0
        images = [a.path for a in client.list_artifacts(child.info.run_id, "images")]
        for step in (0, 1):
            assert any(path.startswith(f"images/samples+step+{step}+") and path.endswith(".png")
                       for path in images), images
        best = {a.path for a in client.list_artifacts(child.info.run_id, "best_checkpoint")}
        assert "best_checkpoint/state.pt" in best
        # what it trained on: the cohort as a dataset input (counts only, no identifier)
        (dataset,) = [d.dataset for d in child.inputs.dataset_inputs]
        assert dataset == parent.inputs.dataset_inputs[0].dataset and dataset.name.startswith("pet-cohort-")
        assert json.loads(dataset.profile)["train"]["patients"] > 0
    ranking = {a.path for a in client.list_artifacts(parent.info.run_id, "ranking")}
    assert {"ranking/gan_ranking.csv", "ranking/gan_ranking.md", "ranking/gan_best_per_arch.md"} <= ranking
    # the default data are series + nodules.csv: every crop's provenance is on the parent run
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "data")} == {"data/crops.json",
                                                                                "data/crops_summary.json"}

    sweep_id = parent.data.tags["medgan.sweep"]
    assert sweep_id.startswith("pet-") and (tmp_path / "tune" / sweep_id / "sweep.json").exists()
    rows = list(csv.DictReader((tmp_path / "runs" / sweep_id / "gan_ranking.csv").open()))
    assert len(rows) == 4
    assert [float(r["ssim"]) for r in rows] == sorted((float(r["ssim"]) for r in rows), reverse=True)
    # one ranking: the checkpoint each trial's run logged is the one the table ranks (and registers, and samples)
    for row in rows:
        (run,) = [c for c in children if c.data.tags["medgan.trial_id"] == row["trial_id"]]
        assert run.data.tags["best_checkpoint_path"] == row["checkpoint_path"]
    out = capsys.readouterr().out
    assert "best per architecture" in out
    # the parent run says which trial won, and with what
    (winner,) = [c for c in children if c.data.tags["medgan.trial_id"] == rows[0]["trial_id"]]
    assert parent.data.tags["best_run_id"] == winner.info.run_id
    assert parent.data.tags["best_trial"] == rows[0]["trial_id"]
    assert parent.data.metrics["best_ssim"] == pytest.approx(float(rows[0]["ssim"]))

    # the best generator of each architecture is a registered model that samples, linked to its trial's run
    mlflow.set_tracking_uri(mlflow_server)
    best = {}
    for row in rows:
        best.setdefault(row["arch"], row)
    for arch, row in best.items():
        (trial_run,) = [c for c in children if c.data.tags["medgan.trial_id"] == row["trial_id"]]
        # other tests' sweeps register under the same names on this shared server: this sweep's version
        (version,) = client.search_model_versions(f"name = 'medgan-pet-{arch}' and run_id = '{trial_run.info.run_id}'")
        sampler = mlflow.pytorch.load_model(f"models:/medgan-pet-{arch}/{version.version}")
        images = sampler(torch.randn(4, int(parent.data.params["gan.latent_dim"])), torch.tensor([0, 1, 0, 1]))
        assert images.shape == (4, 1, 32, 32) and 0 <= float(images.min()) <= float(images.max()) <= 1
        # ... and says why: which sweep, trial and epoch, by what figure, of how many trials, on which cohort
        trials = sum(r["arch"] == arch for r in rows)
        assert version.tags["sweep_id"] == sweep_id and version.tags["trials"] == str(trials)
        assert version.tags["rule"] == f"highest validation ssim of {trials} {arch} trial(s)"
        assert f"The best {arch} generator of sweep {sweep_id}: validation ssim" in version.description
        assert version.tags["dataset_digest"] == parent.inputs.dataset_inputs[0].dataset.digest
        # the champion: this version, unless an earlier sweep on the same cohort scored better (other tests' sweeps
        # register under the same names on this shared server), which this version then says
        champion = client.get_model_version_by_alias(f"medgan-pet-{arch}", "champion")
        if champion.version != version.version:
            assert champion.tags["dataset_digest"] == version.tags["dataset_digest"]
            assert float(champion.tags["ssim"]) > float(version.tags["ssim"])
            assert f"stays on version {champion.version}" in version.tags["champion_decision"]
        assert trial_run_id(client, f"models:/medgan-pet-{arch}@champion", None) == champion.run_id
        assert trial_run_id(client, f"models:/medgan-pet-{arch}/{version.version}", None) == trial_run.info.run_id
        # the logged model carries the validation figures it was chosen by, and the cohort they were measured on
        (model,) = client.search_logged_models([parent.info.experiment_id],
                                               filter_string=f"source_run_id = '{trial_run.info.run_id}'")
        linked = {m.key: m for m in model.metrics}
        assert linked["ssim"].value == pytest.approx(float(row["ssim"])) and linked["ssim"].step == int(row["epoch"])
        assert linked["ssim"].dataset_digest == version.tags["dataset_digest"]
    # ... and the last of them where this package is not installed: the model carries the code its pickle names
    loaded = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_THE_PACKAGE, mlflow_server,
                             f"models:/medgan-pet-{arch}/{version.version}"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    code_file, shape = loaded.stdout.split()[-2:]
    assert "/code/trainables/" in code_file and shape == "(2,1,32,32)"

    # no patient identifier reaches MLflow
    recorded = str([(r.data.params, r.data.tags) for r in parents + children])
    for patient in make_patients(30, 0):
        assert patient.patient_id not in recorded and patient.name not in recorded

    # last, as it skips without chromium: the MLflow UI as the sweep's printed link opens it. The runs table,
    # the sweep's parent run first with an expander, its trials nested under it (counted among the matching
    # runs, not shown as rows of their own)
    page = runs_page(mlflow_server, parent.info.experiment_id)
    assert page in out
    dom = rendered_dom(page, 1400, wait_ms=30000)
    row = dom.index(f">{parent.info.run_name}<")
    assert "runnamecellrenderer" in dom[row - 2000:row]  # the parent row's expand button
    total = len(client.search_runs([parent.info.experiment_id]))
    assert f"<strong>{total}</strong> matching runs" in dom
    assert not any(f">{child.info.run_name}<" in dom for child in children)  # nested: collapsed under the parent
    screenshot(page, 1400, 900, tmp_path / "mlflow_runs.png", wait_ms=30000)


@pytest.mark.slow
def test_killed_sweep_resumes_without_rerunning_or_duplicating(mlflow_server, tmp_path):
    epochs = 4
    args = sweep_args(tmp_path, mlflow_server, trials=3, epochs=epochs)
    log = tmp_path / "first.log"
    driver = start_sweep_process(args, log)

    def one_finished_one_midway():
        client, _, children = sweep_runs(mlflow_server, tmp_path)
        finished = [c for c in children if c.info.status == "FINISHED"]
        midway = [c for c in children if c.info.status == "RUNNING" and 1 <= c.data.metrics.get("epoch", 0) < epochs]
        return (finished, midway[0]) if finished and midway else None

    finished, midway = wait_for(one_finished_one_midway, driver, log)
    kill_process_group(driver)
    client, _, _ = sweep_runs(mlflow_server, tmp_path)
    before = {c.info.run_id: client.get_metric_history(c.info.run_id, "ssim") for c in finished}

    assert sweep_main([*args, "--resume"]) == 0

    client, parents, children = sweep_runs(mlflow_server, tmp_path)
    (parent,) = parents
    assert parent.info.status == "FINISHED"
    assert len(children) == 3 and len({c.data.tags["medgan.trial_id"] for c in children}) == 3
    for child in children:
        assert child.info.status == "FINISHED"
        # one report per epoch: nothing run twice, nothing logged twice
        assert steps(client, child.info.run_id, "epoch") == list(range(1, epochs + 1)), child.data.tags
    for run_id, history in before.items():  # finished trials were not run again
        assert client.get_metric_history(run_id, "ssim") == history
    # the interrupted trial went on from its last checkpoint, not from scratch
    resumed = client.get_metric_history(midway.info.run_id, "resumed_from")
    assert max(m.value for m in resumed) >= 1


@pytest.mark.slow
def test_trial_whose_worker_is_killed_retries_from_its_checkpoint(mlflow_server, tmp_path):
    epochs = 4
    args = sweep_args(tmp_path, mlflow_server, trials=1, epochs=epochs)
    log = tmp_path / "sweep.log"
    driver = start_sweep_process(args, log)

    def midway_trial():
        _, _, children = sweep_runs(mlflow_server, tmp_path)
        return [c for c in children if 1 <= c.data.metrics.get("epoch", 0) < epochs]

    (child,) = wait_for(midway_trial, driver, log)
    workers = subprocess.run(["pgrep", "-f", "ray::RayTrainWorker"], capture_output=True, text=True).stdout.split()
    assert len(workers) == 1, workers
    os.kill(int(workers[0]), signal.SIGKILL)

    assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
    client, _, (child,) = sweep_runs(mlflow_server, tmp_path)
    assert child.info.status == "FINISHED"
    assert steps(client, child.info.run_id, "epoch") == list(range(1, epochs + 1))
    resumed = client.get_metric_history(child.info.run_id, "resumed_from")
    assert max(m.value for m in resumed) >= 1  # the restarted worker group loaded the checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("setting,reason", [
    ("gan.batch_size=0", "ZeroDivisionError"),  # the trial raises
    ("gan.max_critic_loss=1e-9", "diverged"),  # the trial stops itself
])
def test_a_failed_trial_is_recorded_with_its_reason(mlflow_server, tmp_path, setting, reason):
    """From Python, as a researcher starts a sweep in a notebook (the command line only parses into this)."""
    cfg = load_config("pet", "smoke", overrides=[*sweep_overrides(tmp_path, trials=1, epochs=1), setting,
                                                 "search.max_failures=0"])
    result = run_sweep(cfg, tracking_uri=mlflow_server, storage=str(tmp_path / "tune"), runs_dir=tmp_path / "runs",
                       stages=["gan"])
    # no usable checkpoint at all: the sweep ends, says so (the command line exits 1)
    assert not result.ranked and result.stage3 is None and result.report.exists()

    client, (parent,), (child,) = sweep_runs(mlflow_server, tmp_path)
    assert result.run_id == parent.info.run_id and result.sweep_path == parent.data.tags["sweep_path"]
    assert parent.info.status == "FINISHED"
    assert child.info.status == "FAILED"
    assert reason in child.data.tags["failure_reason"]


@pytest.mark.slow
def test_all_three_stages_end_in_a_report_whose_numbers_are_in_mlflow(mlflow_server, tmp_path, capsys):
    assert sweep_main(sweep_args(tmp_path, mlflow_server, trials=2, epochs=1, stages="gan,synth,classify")) == 0
    out = capsys.readouterr().out
    assert "stage 3 (real test split" in out

    client, (parent,), synth_runs = sweep_runs(mlflow_server, tmp_path, stage="synth")
    sweep_id = parent.data.tags["medgan.sweep"]
    out_dir = tmp_path / "runs" / sweep_id
    report = (out_dir / "report.md").read_text()
    assert (out_dir / "report.html").exists()
    # the parent's description: the report's verdict, and where the report is
    assert parent.data.tags["mlflow.note.content"].startswith("**Verdict**") and "report.html" in \
        parent.data.tags["mlflow.note.content"]
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {"report/report.md",
                                                                                      "report/report.html"}
    # stage 2: a set per selected checkpoint, with its manifest and audit, none of it naming a patient
    assert synth_runs
    for run in synth_runs:
        name = run.data.params["set"]
        manifest = json.loads((out_dir / "synthetic" / name / "manifest.json").read_text())
        assert sum(image["kept"] for image in manifest["images"]) == run.data.metrics["kept"]
        assert {a.path for a in client.list_artifacts(run.info.run_id, name)} >= {
            f"{name}/manifest.json", f"{name}/audit.json", f"{name}/closest_pairs.png"}

    # stage 3: one run per classifier x arm x seed; the report shows the numbers MLflow holds
    _, _, classify_runs = sweep_runs(mlflow_server, tmp_path, stage="classify")
    arms_per_classifier = 2 + 2 * len(synth_runs)  # real, classic, one synthetic ratio and its permuted control per set
    assert len(classify_runs) == 2 * arms_per_classifier + len(synth_runs)  # + the TSTR proxy per set
    # the smoke test split (under 10 patients a label) carries no inferential claim, and says so;
    # the FID floor is recorded
    assert "No inferential claim: the test split has" in report and "Holm" in report
    assert parent.data.metrics["test_patients"] < 10 and parent.data.metrics["fid_floor"] > 0
    assert "fid_floor" in report and "fid_minus_floor" in report
    assert "| lr_g |" in (out_dir / "gan_ranking.md").read_text()  # the searched setting each trial drew
    n_test = None
    for run in classify_runs:
        assert run.info.status == "FINISHED", run.data.tags.get("failure_reason")
        # the runs table groups by these tags, and no param repeats one
        classifier, arm = run.data.tags["classifier"], run.data.tags["arm_id"]
        arm_of_run = Arm.parse(arm)  # the arm's kind, role, set and ratio, each a tag
        assert (run.data.tags["arm"], run.data.tags["arm_role"]) == (arm_of_run.kind, arm_of_run.spec.role)
        assert run.data.tags["ratio"] == (f"{arm_of_run.ratio:g}" if arm_of_run.ratio else "none")
        assert run.data.tags["synthetic_set"] == (arm_of_run.set or "none")
        assert run.info.run_name == f"{classifier} | {arm_of_run.title} | seed {run.data.tags['seed']}"
        assert not {"cell.classifier", "cell.arm_id", "seed"} & run.data.params.keys()
        # what it trained on, as the Datasets column shows it: the cohort, the synthetic set, the held-out patients,
        # in words; and the test split it is scored on
        inputs = {(d.dataset.name, next(t.value for t in d.tags if t.key == "mlflow.data.context"))
                  for d in run.inputs.dataset_inputs}
        cohort = parent.inputs.dataset_inputs[0].dataset.name
        trained_on = ([cohort] * arm_of_run.spec.trains_on_real + [arm_of_run.set] * bool(arm_of_run.set)
                      + [f"{cohort}-held_out"] * (arm_of_run.kind == "oracle"))
        assert inputs == {(name, arm_of_run.trains_on) for name in trained_on} | {(f"{cohort}-test", "evaluation")}
        assert run.data.params["epochs"] == "3" and run.data.params["weights"] == "none"  # this classifier's budget
        row = next(line for line in report.splitlines() if line.startswith(f"| {classifier} | {arm} |"))
        # a degenerate trial is a true/false tag with its reason beside it, and named as such in the report
        assert run.data.tags["degenerate"] in ("true", "false")
        assert (run.data.tags["degenerate"] == "true") == ("degenerate_reason" in run.data.tags)
        assert run.data.tags["degenerate"] == "false" or "degenerate" in row
        assert run.data.metrics["samples_seen"] == run.data.metrics["steps"] * 16
        # final figures at step 0 (the chart view's bars), the kept epoch a metric of its own
        assert steps(client, run.info.run_id, "test_roc_auc") == [0] and run.data.metrics["best_epoch"] >= 1
        assert {"test/confusion_matrix.png", "test/roc.png", "test/test_predictions.json"} <= {
            a.path for a in client.list_artifacts(run.info.run_id, "test")}
        assert f"{run.data.metrics['test_accuracy']:.3f}" in row and f"{run.data.metrics['test_roc_auc']:.3f}" in row
        predictions = json.loads(Path(client.download_artifacts(run.info.run_id, "test/test_predictions.json",
                                                               str(tmp_path / run.info.run_id))).read_text())
        n_test = n_test or len(predictions["labels"])
        assert len(predictions["labels"]) == n_test  # every arm is scored on the same real test slices
        if arm.startswith(("synthetic", "permuted")):
            assert run.data.metrics["synthetic_images"] > 0
        elif not arm.startswith("tstr"):
            assert run.data.metrics["synthetic_images"] == 0

    # the report's rows as MLflow runs of their own: one summary per classifier x arm, the same figures
    _, _, summaries = sweep_runs(mlflow_server, tmp_path, stage="summary")
    assert len(summaries) == len({(r.data.tags["classifier"], r.data.tags["arm_id"]) for r in classify_runs})
    for run in summaries:
        classifier, arm = run.data.tags["classifier"], run.data.tags["arm_id"]
        row = next(line for line in report.splitlines() if line.startswith(f"| {classifier} | {arm} |"))
        assert f"{run.data.metrics['test_roc_auc']:.3f}" in row and run.data.tags["degenerate"] in ("true", "false")
        assert run.info.run_name.startswith(f"{classifier} | {Arm.parse(arm).title} | ")

    # any trial reproduces locally from its record, to the last digit (CPU, same data, code, seed, threads), also
    # with its data somewhere else than where the sweep read it
    _, _, gan_runs = sweep_runs(mlflow_server, tmp_path, stage="gan")
    synthetic_arm = next(r for r in classify_runs if r.data.tags["arm"] == "synthetic")
    (best_gan,) = [r for r in gan_runs if r.info.run_id == parent.data.tags["best_run_id"]]
    record = json.loads((Path(parent.data.tags["sweep_path"]) / "sweep.json").read_text())
    moved = shutil.copytree(record["data_dir"], tmp_path / "moved-data")
    arm = ["--arm", synthetic_arm.data.tags["arm_id"], "--classifier", synthetic_arm.data.tags["classifier"],
           "--seed", synthetic_arm.data.tags["seed"]]
    for original, which in ((best_gan, ["--best", "pet", "--data", str(moved)]),
                            (synthetic_arm, ["--best", "pet", *arm])):
        assert reproduce_main([*which, "--tracking-uri", mlflow_server]) == 0
        (copy,) = client.search_runs([original.info.experiment_id],
                                     f"tags.`medgan.reproduces` = '{original.info.run_id}'")
        assert copy.data.metrics and all(original.data.metrics[k] == v for k, v in copy.data.metrics.items()), (
            {k: (original.data.metrics[k], v) for k, v in copy.data.metrics.items()})
    # where the data is nowhere to be found, the error names the dataset the trial needs
    elsewhere = tmp_path / "record-from-elsewhere"
    elsewhere.mkdir()
    (elsewhere / "sweep.json").write_text(json.dumps({**record, "data_dir": "/data/on/the/head/pet"}))
    assert reproduce_main(["--best", "pet", "--sweep-path", str(elsewhere), "--tracking-uri", mlflow_server]) == 2
    error = capsys.readouterr().err
    assert "/data/on/the/head/pet" in error and "--data" in error
    assert parent.inputs.dataset_inputs[0].dataset.digest in error

    # last, as it skips without chromium: the three questions a user asks of a sweep, answered by the links it
    # printed, in the MLflow UI. The pages are kept as docs/img/mlflow-*.png when MEDGAN_DOCS_IMAGES names a folder.
    archs = {r.data.params["arch"] for r in gan_runs}
    questions = ui_questions(mlflow_server, parent.info.experiment_id, parent.info.run_id, load_config("pet", "smoke"),
                             sorted(archs), classified=True)
    assert all(f"  {question}: {link}" in out for question, link in questions)
    (gan_link, gan_count), (arm_link, arm_count) = ((questions[0][1], len(gan_runs)), (questions[1][1], len(summaries)))
    for link, count in ((gan_link, gan_count), (arm_link, arm_count)):
        assert f"<strong>{count}</strong> matching runs" in rendered_dom(link, 1400, wait_ms=20000)
    # ... and what ticking them all and pressing Compare shows: every setting and figure side by side
    def compare(runs) -> str:
        return "{}/#/compare-runs?runs={}&experiments={}".format(
            mlflow_server, quote(json.dumps([r.info.run_id for r in runs])),
            quote(json.dumps([parent.info.experiment_id])))

    assert "delta_roc_auc" in rendered_dom(compare(summaries), 1400, wait_ms=20000)
    champion = client.get_model_version_by_alias("medgan-pet-cgan", "champion")
    pages = {"mlflow-gan-trials.png": (compare(gan_runs), 1500),
             "mlflow-arms.png": (compare(summaries), 2200),
             "mlflow-champion.png": (f"{mlflow_server}/#/models/medgan-pet-cgan/versions/{champion.version}", 1000)}
    folder = Path(os.environ.get("MEDGAN_DOCS_IMAGES") or tmp_path)
    for name, (page, height) in pages.items():
        screenshot(page, 1400, height, folder / name, wait_ms=20000)


@pytest.mark.slow
def test_a_sweep_on_s3_storage_keeps_its_state_and_checkpoints_there_and_resumes(mlflow_server, tmp_path, s3):
    bucket = "medgan-test"  # the `s3` fixture's bucket
    args = sweep_args(tmp_path, mlflow_server, trials=1, epochs=1)
    args[args.index("--storage") + 1] = f"s3://{bucket}/tune"
    # the local Ray started by the sweep inherits the fixture's endpoint and credentials
    assert sweep_main(args) == 0

    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    client, (parent,), (child,) = sweep_runs(mlflow_server, f"s3://{bucket}/tune")
    sweep_id = parent.data.tags["medgan.sweep"]
    assert f"tune/{sweep_id}/sweep.json" in keys
    assert any(k.startswith(f"tune/{sweep_id}/gan/") for k in keys)  # Tune's experiment state
    assert any(k.startswith(f"tune/{sweep_id}/gan-train/") and k.endswith("/state.pt") for k in keys)
    assert child.data.tags["best_checkpoint_path"].startswith(f"s3://{bucket}/tune/{sweep_id}/gan-train/")
    assert "best_checkpoint/state.pt" in {a.path for a in client.list_artifacts(child.info.run_id, "best_checkpoint")}

    # resumable from S3: the finished sweep restores, runs nothing again and logs nothing twice
    assert sweep_main([*args, "--resume"]) == 0
    client, (parent,), (child,) = sweep_runs(mlflow_server, f"s3://{bucket}/tune")
    assert len(client.get_metric_history(child.info.run_id, "epoch")) == 1
