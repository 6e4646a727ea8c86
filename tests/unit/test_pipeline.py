"""The pipeline's plan: which fine-tunes it runs, on which theta0 and store, with which overrides."""

from __future__ import annotations

import pytest

from lottery.config import ConfigError, PipelineConfig, load_config
from lottery.train.pipeline import check_config, finetune_jobs
from lottery.train.workers import finetune_worker_count, finetune_worker_envs, worker_env, worker_threads


def test_the_default_plan_is_dense_s60_and_s70_on_all_seven_tasks():
    config = load_config("pipeline-uniter-mini", [], cls=PipelineConfig)
    jobs = finetune_jobs(config)
    assert len(jobs) == 21 and len({(j.task, j.ticket) for j in jobs}) == 21
    assert {j.ticket for j in jobs} == {"dense", "uniter-mini/pretrain/s60", "uniter-mini/pretrain/s70"}
    assert all(not j.save_model and j.init == "theta0" for j in jobs)


def test_fine_tunes_use_the_imp_runs_theta0_and_store_and_per_task_overrides():
    config = load_config(
        "pipeline-uniter-mini",
        [
            "imp_overrides=['theta0_overrides=[train.steps=7]', 'imp.store=/tmp/elsewhere', "
            "'imp.publish={0.5: a/s50}']",
            "tasks=[vqa, nlvr2]",
            "finetune_overrides=[train.steps=3]",
            "task_overrides={nlvr2: [train.steps=5, optim.lr=1.0e-4]}",
        ],
        cls=PipelineConfig,
    )
    jobs = finetune_jobs(config)
    assert [(j.task, j.ticket) for j in jobs] == [
        ("vqa", "dense"),
        ("vqa", "a/s50"),
        ("nlvr2", "dense"),
        ("nlvr2", "a/s50"),
    ]
    assert all(j.theta0_overrides == ("train.steps=7",) and j.store == "/tmp/elsewhere" for j in jobs)
    assert [j.train.steps for j in jobs] == [3, 3, 5, 5]
    assert [j.optim.lr for j in jobs] == [8e-5, 8e-5, 1e-4, 1e-4]  # vqa: its shipped config


def test_bad_pipeline_configs_name_the_problem():
    with pytest.raises(ConfigError, match="'vqa2' not among"):
        check_config(PipelineConfig(tasks=("vqa2",)))
    with pytest.raises(ConfigError, match="workers >= 0"):
        check_config(PipelineConfig(workers=-1))
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config("pipeline-uniter-mini", ["worker=3"], cls=PipelineConfig)


def test_each_familys_pipeline_plans_its_own_tasks_and_refuses_a_task_it_has_no_head_for():
    for family, tasks in (("lxmert", {"vqa", "gqa", "nlvr2"}), ("vilt", {"vqa", "nlvr2"})):
        config = load_config(f"pipeline-{family}-mini", [], cls=PipelineConfig)
        check_config(config)
        jobs = finetune_jobs(config)
        assert {j.task for j in jobs} == tasks and all(j.theta0 == f"pretrain-{family}-mini" for j in jobs)
        assert {j.ticket for j in jobs} == {
            "dense",
            f"{family}-mini/pretrain/s60",
            f"{family}-mini/pretrain/s70",
        }
    refused = load_config("pipeline-vilt-mini", ["tasks=[vqa, gqa]"], cls=PipelineConfig)
    with pytest.raises(ConfigError, match=r"tasks: vilt \(imp-vilt-mini\) has no head for \['gqa'\]"):
        check_config(refused)


def test_a_worker_is_a_job_of_its_own_not_a_rank_of_the_drivers(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    env = worker_env(2)
    assert env["OMP_NUM_THREADS"] == "2"
    assert not {"RANK", "SLURM_PROCID", "SLURM_NTASKS"} & set(env)


def test_the_default_worker_count_is_two_on_cpu_as_before():
    assert PipelineConfig().workers == 0
    assert finetune_worker_count(0, 0) == 2


def test_the_shipped_pipeline_config_runs_two_workers_on_cpu():
    config = load_config("pipeline-uniter-mini", [], cls=PipelineConfig)
    assert finetune_worker_count(config.workers, 0) == 2


def test_the_default_worker_count_is_one_per_visible_gpu():
    assert finetune_worker_count(0, 4) == 4


def test_an_explicit_worker_count_on_cpu_is_kept():
    assert finetune_worker_count(3, 0) == 3


def test_fewer_workers_than_gpus_is_kept():
    assert finetune_worker_count(2, 4) == 2


def test_more_workers_than_gpus_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as refused:
        finetune_worker_count(3, 2, "4,5")
    assert str(refused.value) == (
        "workers=3 but 2 GPU(s) visible (CUDA_VISIBLE_DEVICES='4,5'): each fine-tune worker needs a GPU "
        "of its own; set workers=2 or fewer, or workers=0 for one per GPU"
    )


def test_the_driver_refuses_too_many_workers_before_imp_starts(monkeypatch):
    from lottery.train import pipeline

    started = []
    monkeypatch.setattr(pipeline, "visible_gpu_count", lambda: 1)
    monkeypatch.setattr(pipeline, "_run_imp", started.append)
    with pytest.raises(ConfigError, match="workers=2 but 1 GPU"):
        pipeline.run_pipeline(PipelineConfig(workers=2), [])
    assert started == []


def test_the_workers_share_the_cores_as_before():
    assert [worker_threads(2, 2), worker_threads(8, 2), worker_threads(3, 2)] == [1, 4, 1]


def test_a_worker_gets_one_thread_when_the_cores_are_unknown_or_fewer_than_workers():
    assert [worker_threads(None, 2), worker_threads(1, 2)] == [1, 1]


def test_cpu_workers_keep_the_drivers_environment_without_a_gpu_variable():
    envs = finetune_worker_envs({"PATH": "/bin"}, 0, 2, 1)
    assert envs == [{"PATH": "/bin", "OMP_NUM_THREADS": "1"}, {"PATH": "/bin", "OMP_NUM_THREADS": "1"}]


def test_each_gpu_worker_gets_its_own_gpu():
    envs = finetune_worker_envs({}, 2, 2, 4)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in envs] == ["0", "1"]


def test_gpu_workers_take_the_drivers_visible_gpus_in_order():
    envs = finetune_worker_envs({"CUDA_VISIBLE_DEVICES": "4, 6,7"}, 3, 2, 1)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in envs] == ["4", "6"]


def test_gpu_workers_keep_uuid_entries_of_the_drivers_list():
    envs = finetune_worker_envs({"CUDA_VISIBLE_DEVICES": "GPU-aa11,MIG-bb22"}, 2, 2, 1)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in envs] == ["GPU-aa11", "MIG-bb22"]


def test_only_the_gpus_cuda_counts_are_handed_out():
    """CUDA stops at the list's first invalid entry: "1,99,2" is one GPU."""
    envs = finetune_worker_envs({"CUDA_VISIBLE_DEVICES": "1,99,2"}, 1, 1, 1)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in envs] == ["1"]


def test_a_gpu_worker_is_a_job_of_its_own_not_a_rank_of_the_drivers():
    driver = {"RANK": "1", "LOCAL_RANK": "1", "SLURM_LOCALID": "1", "CUDA_VISIBLE_DEVICES": "2,3"}
    assert finetune_worker_envs(driver, 2, 1, 3) == [{"CUDA_VISIBLE_DEVICES": "2", "OMP_NUM_THREADS": "3"}]


def test_each_task_reads_its_shipped_fine_tune_config_under_the_overrides():
    from lottery.train.finetune_configs import task_config

    assert task_config("vqa").optim.lr == 8e-5 and task_config("nlvr2").optim.lr == 3e-5
    assert task_config("refcoco+").optim.lr == 6e-5  # finetune-refcocoplus.yaml
    vcr = task_config("vcr", None, ["optim.lr=1.0e-4"])
    assert vcr.train.batch_size == 4 and vcr.optim.lr == 1e-4 and vcr.train.zero_stage == 0
    assert vcr.optim.new_parts == (r"head\..*",)


def test_baselines_add_the_papers_table_1_rows_at_the_sparsest_ticket():
    config = load_config(
        "pipeline-uniter-mini", ["tasks=[nlvr2]", "baselines=[random, bert, shuffled]"], cls=PipelineConfig
    )
    check_config(config)
    jobs = [(j.ticket, j.init) for j in finetune_jobs(config)]
    assert jobs[3:] == [
        ("uniter-mini/pretrain/s70-random", "theta0"),
        ("uniter-mini/pretrain/s70", "bert"),
        ("uniter-mini/pretrain/s70", "shuffled"),
    ]
    with pytest.raises(ConfigError, match="'lottery' not among"):
        check_config(PipelineConfig(baselines=("lottery",)))


def test_a_half_built_model_directory_is_rebuilt_whole(tmp_path, shapes_dir):
    """A build killed mid-write used to leave models/uniter-mini without config.json, which every later
    job refused ("already exists"); the build now goes aside and is renamed into place."""
    from lottery.config import ModelConfig
    from lottery.train.assets import ensure_model

    out = tmp_path / "models" / "uniter-mini"
    out.mkdir(parents=True)
    (out / "model.safetensors").write_bytes(b"half")
    built = ensure_model(ModelConfig(dir=str(out), init_from_bert="minilm"), shapes_dir)
    assert (built / "config.json").is_file() and (built / "model.safetensors").stat().st_size > 1000
    assert not list(out.parent.glob(".*partial"))


def test_the_driver_builds_every_tasks_data_before_the_workers_start(tmp_path, shapes_dir, monkeypatch):
    """Two workers writing the same task directory at once would collide: the driver writes them first."""
    from lottery.train import pipeline

    config = load_config("pipeline-uniter-mini", ["tasks=[vqa, nlvr2]"], cls=PipelineConfig)
    written, models = [], []
    monkeypatch.setattr("lottery.train.assets.ensure_data", lambda data: shapes_dir)
    monkeypatch.setattr("lottery.train.assets.ensure_model", lambda model, scenes: models.append(scenes))
    monkeypatch.setattr(
        "lottery.data.task_sets.write_task",
        lambda task, scenes, seed: written.append((task, scenes, seed)),
    )
    imp = pipeline.imp_config(config)
    pipeline.prepare_task_inputs(pipeline.theta0_config(imp), finetune_jobs(config, imp))
    assert models == [shapes_dir]
    assert {w[0] for w in written} == {"vqa", "nlvr2"} and all(w[1] == shapes_dir for w in written)
