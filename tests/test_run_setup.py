"""The library steps the CLI calls: an evaluation run (csakd.eval_run) and a training process set up by the caller."""

from __future__ import annotations

import pytest
import torch

from csakd.errors import InputError
from csakd.eval_run import EvalOptions, load_test_pairs, run_evaluation
from csakd.train.setup import setup_process, teardown_process
from csakd.train.trainer import Trainer
from tests.test_cli import write_cube_folder
from tests.test_train import datasets, spec


def test_a_trainer_given_its_process_starts_like_one_that_sets_it_up(tmp_path) -> None:
    train, val, _ = datasets()
    alone = Trainer(spec(seed=3), train, val, tmp_path / "alone", progress=False)
    alone.close()
    torch.manual_seed(99)  # whatever came before: setup_process seeds the weights
    process = setup_process(spec(seed=3).train, samples_per_epoch=len(train))
    assert torch.initial_seed() == 3 and process.device == torch.device("cpu") and not process.dist.enabled
    given = Trainer(spec(seed=3), train, val, tmp_path / "given", progress=False, process=process)
    assert given.process is process and given.dist is process.dist and not given._owns_process
    for a, b in ((alone.teacher, given.teacher), (alone.student, given.student)):
        assert a is not None and b is not None
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), name
    given.close()
    teardown_process(process)
    with pytest.raises(InputError, match="batch_size"):
        setup_process(spec(batch_size=0).train)


def test_an_evaluation_run_is_a_library_call(tmp_path) -> None:
    folder, srf = write_cube_folder(tmp_path, count=2)
    options = EvalOptions(methods=["gsa"], data=folder, srf=str(srf), figures=0, out=tmp_path / "eval")
    test = load_test_pairs(options)
    assert [p.name for p in test.pairs] == ["scene0", "scene1"] and test.scale == 4
    assert test.degradation is not None and tuple(test.pairs[0].hr_msi.shape) == (3, 32, 32)
    result = run_evaluation(options)
    assert set(result["methods"]) == {"bicubic", "gsa"} and len(result["per_image"]) == 4
    assert (tmp_path / "eval" / "metrics.json").exists() and (tmp_path / "eval" / "table.md").exists()
    with pytest.raises(InputError, match="nothing to evaluate"):
        run_evaluation(EvalOptions(data=folder, srf=str(srf)))
    with pytest.raises(InputError, match="no degradation to simulate"):
        load_test_pairs(EvalOptions(methods=["gsa"], data=folder))
