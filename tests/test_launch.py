"""How a training stage re-runs itself under a launcher, and the committed FSDP config."""

from __future__ import annotations

import sys

import pytest

from deltalab.schema.runtime import RuntimeParams
from deltalab.stage import is_main_process
from deltalab.train.launch import launch_command
from tests.tiny import ROOT

ARGV = ["stages/dpo.py", "--checkpoint", "dpo", "--cond", "baseline", "--seed", "0"]


def test_torchrun_and_accelerate_commands_rerun_the_same_stage():
    torchrun = launch_command(RuntimeParams(processes=4), ARGV)
    assert torchrun == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "4", *ARGV]  # fmt: skip
    config = "configs/accelerate/fsdp.yaml"
    accelerate = launch_command(
        RuntimeParams(processes=8, launcher="accelerate", accelerate_config=config), ARGV
    )
    assert accelerate == [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                          config, "--num_processes", "8", *ARGV]  # fmt: skip


def test_only_rank_zero_writes(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert is_main_process()
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()


def test_the_fsdp_config_is_an_accelerate_fsdp_config():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    config = load_config_from_file(str(ROOT / "configs/accelerate/fsdp.yaml"))
    assert config.distributed_type == DistributedType.FSDP
    assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert config.mixed_precision == "bf16"


def test_a_global_batch_that_does_not_split_is_refused(tmp_path, monkeypatch):
    from deltalab.errors import ConfigError
    from deltalab.train.params import SFTParams
    from deltalab.train.recipe import TrainingRun

    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    run = TrainingRun(tmp_path / "out", tmp_path / "logs", RuntimeParams(device="cpu"), 0)
    with pytest.raises(ConfigError, match=r"batch_size 8 is the global batch.*processes=3"):
        run.trainer_args(SFTParams(batch_size=8))
    assert run.trainer_args(SFTParams(batch_size=9))["per_device_train_batch_size"] == 3
    assert not (tmp_path / ".logs.tmp-live").exists()  # a non-zero rank logs in its scratch
