"""Guards found in review: equal DDP slices, fp32 logits under autocast, context check, resume keys."""
import pytest
import torch

from dassl.data.samplers import GlobalBatchSampler
from dassl.engine.run_state import config_fingerprint
from trainers.checks import check_context_fits
from trainers.losses import cosine_logits


def test_global_batch_must_divide_by_world_size_and_slices_are_equal():
    with pytest.raises(ValueError, match="BATCH_SIZE 4 is the global batch.*3"):
        GlobalBatchSampler(12, 4, seed=0, rank=0, world_size=3)
    # 10 samples, global batch 4, 2 ranks: the final partial batch of 2 is split 1 / 1, never 2 / 0.
    slices = [list(GlobalBatchSampler(10, 4, seed=0, rank=r, world_size=2)) for r in range(2)]
    assert [len(b) for b in slices[0]] == [len(b) for b in slices[1]] == [2, 2, 1]
    union = sorted(i for rank in slices for batch in rank for i in batch)
    assert union == list(range(10))


def test_logits_stay_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1).bfloat16()
    scale = torch.tensor(4.6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = cosine_logits(scale, image, text)
        per_image = cosine_logits(scale, image, text.expand(2, 5, 8))
    assert logits.dtype == torch.float32 and torch.allclose(logits, per_image)
    assert torch.allclose(logits, scale.exp() * image @ text.float().t(), atol=1e-4)  # a bf16 product is off by ~0.1


def test_context_check_counts_class_names_as_the_prompts_spell_them():
    # "Apply_Eye_Makeup." is 8 tokens with underscores but 6 as the prompt "Apply Eye Makeup." is built.
    check_context_fits(71, ["Apply_Eye_Makeup"], 77, "TRAINER.COOP.N_CTX")
    with pytest.raises(ValueError, match="TRAINER.COOP.N_CTX 72"):
        check_context_fits(72, ["Apply_Eye_Makeup"], 77, "TRAINER.COOP.N_CTX")


def test_resume_fingerprint_ignores_memory_knobs_but_not_the_deployed_model():
    base = {"TEST": {"FINAL_MODEL": "last_step", "NO_TEST": False, "SPLIT": "test"},
            "TRAINER": {"GOPRO": {"EVAL_PROMPT_CHUNK": 1024, "TEXT_CHECKPOINTING": False, "N_CTX": 4}}}

    def with_(section, sub, key, value):
        cfg = {k: {kk: (dict(vv) if isinstance(vv, dict) else vv) for kk, vv in v.items()} for k, v in base.items()}
        (cfg[section][sub] if sub else cfg[section])[key] = value
        return config_fingerprint(cfg)[0]

    same = config_fingerprint(base)[0]
    assert with_("TRAINER", "GOPRO", "EVAL_PROMPT_CHUNK", 64) == same
    assert with_("TRAINER", "GOPRO", "TEXT_CHECKPOINTING", True) == same
    assert with_("TEST", None, "SPLIT", "val") == same
    assert with_("TEST", None, "FINAL_MODEL", "best_val") != same
    assert with_("TRAINER", "GOPRO", "N_CTX", 8) != same


def test_gopro_refuses_a_batch_its_projector_batchnorm_cannot_train_on():
    from dassl.config import ConfigError, get_cfg_default
    from trainers.gopro import check_gopro_cfg

    cfg = get_cfg_default()
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 1
    with pytest.raises(ConfigError, match="BATCH_SIZE 1 gives 1 image"):
        check_gopro_cfg(cfg)
    cfg.TRAINER.GOPRO.W_CONTRASTIVE = 0.0  # no projector in the step: batch 1 is fine
    check_gopro_cfg(cfg)
