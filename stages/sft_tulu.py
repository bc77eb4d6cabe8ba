"""sft_tulu@<cond>-<seed>: instruction SFT (Tulu-3-style chat mixture) from the pretrained model."""

from deltalab import paths, stage
from deltalab.data import read_jsonl
from deltalab.train.recipe import run_sft_stage


def main(params, cond: str, seed: int) -> None:
    train = read_jsonl(paths.DATA / "tulu/train.jsonl", ["messages"])
    val = read_jsonl(paths.DATA / "tulu/val.jsonl", ["messages"])
    if params.sft_tulu.max_train_samples:
        train = train[: params.sft_tulu.max_train_samples]
    run_sft_stage(params, "sft_tulu", "pretrain", cond, seed, train, val)


if __name__ == "__main__":
    stage.run(main, cond=str, seed=int)
