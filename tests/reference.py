"""An independent, deliberately plain implementation of dgla-spec.md (and of ARL-CNN as
docs/architectures.md defines it), for tests only.

It reads a state dict directly (F.conv2d / F.batch_norm, no package modules) and spells HVA as
the spec does: F.interpolate for the mapping, and a Python loop over query rows (columns), as
the article's code did, with its defects fixed. Slow by design; it is the ground truth.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
State = dict[str, Tensor]


def resize(x: Tensor, h: int, w: int) -> Tensor:
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=True)


def conv(x: Tensor, sd: State, key: str, stride: int = 1, padding: int = 0) -> Tensor:
    return F.conv2d(x, sd[f"{key}.weight"], sd.get(f"{key}.bias"), stride=stride, padding=padding)


def bn(x: Tensor, sd: State, key: str) -> Tensor:
    return F.batch_norm(
        x,
        sd[f"{key}.running_mean"],
        sd[f"{key}.running_var"],
        sd[f"{key}.weight"],
        sd[f"{key}.bias"],
        training=False,
        eps=1e-5,
    )


def horizontal_loop(x: Tensor, wq: Tensor, wk: Tensor, wv: Tensor, alpha: Tensor) -> Tensor:
    b, c, h, w = x.shape
    hm, wm = math.ceil(h / 2), math.ceil(w / 2)
    q = resize(F.conv2d(x, wq), hm, wm)
    k = F.conv2d(x, wk)[:, :, 0::2, :]
    v_mean = F.conv2d(x, wv).mean(dim=2)  # (B, C, W)
    ctx = torch.zeros(b, c, hm, wm, dtype=x.dtype)
    for i in range(hm):  # the article's loop over rows, kept as the reference
        energy = torch.bmm(q[:, :, i, :].transpose(1, 2), k[:, :, i, :])  # (B, Wm, W)
        attn = energy.softmax(dim=-1)
        ctx[:, :, i, :] = torch.bmm(attn, v_mean.transpose(1, 2)).transpose(1, 2)
    return x + alpha * resize(ctx, h, w)  # defect 1: the residual and the return


def vertical_loop(x: Tensor, wq: Tensor, wk: Tensor, wv: Tensor, beta: Tensor) -> Tensor:
    b, c, h, w = x.shape
    hm, wm = math.ceil(h / 2), math.ceil(w / 2)
    q = resize(F.conv2d(x, wq), hm, wm)
    k = F.conv2d(x, wk)[:, :, :, 0::2]
    v_mean = F.conv2d(x, wv).mean(dim=3)  # (B, C, H)
    ctx = torch.zeros(b, c, hm, wm, dtype=x.dtype)
    for j in range(wm):
        energy = torch.bmm(q[:, :, :, j].transpose(1, 2), k[:, :, :, j])  # (B, Hm, H)
        attn = energy.softmax(dim=-1)
        ctx[:, :, :, j] = torch.bmm(attn, v_mean.transpose(1, 2)).transpose(1, 2)
    return x + beta * resize(ctx, h, w)


def local(x: Tensor, sd: State, key: str) -> Tensor:
    f = x
    for i in (0, 3, 6):
        f = F.relu(bn(conv(f, sd, f"{key}.convs.{i}", padding=1), sd, f"{key}.convs.{i + 1}"))
    b, c, h, w = f.shape
    return f.reshape(b, c, h * w).softmax(-1).reshape(b, c, h, w) * x


def gla(x: Tensor, sd: State, key: str) -> Tensor:
    ha = horizontal_loop(
        x,
        sd[f"{key}.ha.query.weight"],
        sd[f"{key}.ha.key.weight"],
        sd[f"{key}.ha.value.weight"],
        sd[f"{key}.ha.alpha"],
    )
    va = vertical_loop(
        ha,
        sd[f"{key}.va.query.weight"],
        sd[f"{key}.va.key.weight"],
        sd[f"{key}.va.value.weight"],
        sd[f"{key}.va.beta"],
    )
    return va + sd[f"{key}.gamma"] * local(x, sd, f"{key}.la")


def block(x: Tensor, sd: State, key: str, stride: int, use_gla: bool) -> Tensor:
    if f"{key}.downsample.0.weight" in sd:
        shortcut = bn(conv(x, sd, f"{key}.downsample.0", stride=stride), sd, f"{key}.downsample.1")
    else:
        shortcut = x
    h = F.relu(bn(conv(x, sd, f"{key}.conv1"), sd, f"{key}.bn1"))
    if use_gla:
        if stride == 2:  # defect 2: the main path follows the stride
            h = F.avg_pool2d(h, 2)
        h = F.relu(bn(gla(h, sd, f"{key}.gla"), sd, f"{key}.bn2"))
    else:
        h = F.relu(bn(conv(h, sd, f"{key}.conv2", stride=stride, padding=1), sd, f"{key}.bn2"))
    h = bn(conv(h, sd, f"{key}.conv3"), sd, f"{key}.bn3")
    if f"{key}.alpha" in sd:  # ARL (docs/architectures.md): each channel's exp over its positions' sum
        e = torch.exp(h - h.amax(dim=(2, 3), keepdim=True))
        attention = e / e.sum(dim=(2, 3), keepdim=True)
        return F.relu(h + shortcut + sd[f"{key}.alpha"] * attention * shortcut)
    return F.relu(h + shortcut)


def stage(x: Tensor, sd: State, n: int, use_gla: bool) -> Tensor:
    i = 0
    while f"layer{n}.{i}.conv1.weight" in sd:
        x = block(x, sd, f"layer{n}.{i}", 2 if (i == 0 and n > 1) else 1, use_gla)
        i += 1
    return x


def forward(sd: State, image_224: Tensor, image_448: Tensor | None = None) -> Tensor:
    """Logits of the spec's network for a state dict (dual input iff ``fuse.0`` exists)."""
    use_gla = any(".gla." in k for k in sd)

    def stem(x: Tensor) -> Tensor:
        return F.max_pool2d(F.relu(bn(conv(x, sd, "conv1", stride=2, padding=3), sd, "bn1")), 3, 2, 1)

    f = stem(image_224)
    if "fuse.0.weight" in sd:
        assert image_448 is not None
        g = stem(image_448)
        for n in (1, 2, 3):
            f, g = stage(f, sd, n, use_gla), stage(g, sd, n, use_gla)
            r = g.shape[-1] // f.shape[-1]
            f = f + F.conv2d(torch.cat([f, F.avg_pool2d(g, r)], 1), sd[f"fuse.{n - 1}.weight"])
    else:
        for n in (1, 2, 3):
            f = stage(f, sd, n, use_gla)
    f = stage(f, sd, 4, use_gla)
    return F.linear(f.mean(dim=(2, 3)), sd["fc.weight"], sd["fc.bias"])
