"""GOPro under DDP (2 gloo processes) computes the same losses and gradients as one process."""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import clip
from trainers.class_prompts import ClassPrompts, init_context
from trainers.gopro import GOProNet, GOProPromptLearner

CLASSNAMES = ["dog", "cat", "sea lion"]
GLOBAL_BATCH = 4


def build_net(clip_path: str) -> GOProNet:
    torch.manual_seed(0)  # identical learned weights in every process
    vit = clip.load(clip_path)
    learner = GOProPromptLearner(init_context(vit, 4, ""), vit.visual_layer_widths, vit.text_width, vit.embed_dim)
    return GOProNet(vit, learner, ClassPrompts(vit, CLASSNAMES, 4), w_contrastive=0.5, projector_in_logits=True)


def global_batch() -> tuple[dict, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = {k: torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g) for k in ("img", "img_moco", "img_augmix")}
    return images, torch.tensor([0, 2, 1, 2])


def losses_and_grads(net: GOProNet, images: dict, labels: torch.Tensor) -> tuple[dict, dict]:
    losses = net.losses(images, labels)
    sum(v for k, v in losses.items() if k.startswith("loss")).backward()
    grads = {n: p.grad.clone() for n, p in net.prompt_learner.named_parameters()}
    return {k: v.detach() for k, v in losses.items()}, grads


def _worker(rank: int, world: int, clip_path: str, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    net = build_net(clip_path)
    images, labels = global_batch()
    rows = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    losses, grads = losses_and_grads(net, {k: v[rows] for k, v in images.items()}, labels[rows])
    for g in grads.values():  # what the engine does after backward: average gradients across ranks
        dist.all_reduce(g)
        g /= world
    for v in losses.values():
        dist.all_reduce(v)
        v /= world
    if rank == 0:
        torch.save({"losses": losses, "grads": grads}, out_file)
    dist.destroy_process_group()


def test_two_ranks_match_one_process(tiny_clip_path, tmp_path):
    out_file = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(2, tiny_clip_path, str(tmp_path / "init"), out_file), nprocs=2, join=True)
    ddp = torch.load(out_file)

    net = build_net(tiny_clip_path)
    losses, grads = losses_and_grads(net, *global_batch())
    for key in ("loss_ce", "loss_consistency", "loss_contrastive"):
        torch.testing.assert_close(ddp["losses"][key], losses[key], rtol=1e-5, atol=1e-6)
    assert grads["image_projector.1.weight"].abs().sum() > 0  # BatchNorm is trained, on global statistics
    # Float noise is relative to the largest gradient (a bias before BatchNorm has a gradient of ~0).
    scale = max(g.abs().max().item() for g in grads.values())
    for name, grad in grads.items():
        assert (ddp["grads"][name] - grad).abs().max().item() <= 1e-4 * scale, name
