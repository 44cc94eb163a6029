"""Random-weight PatchAlign3D models for tests (nothing here is a trained model)."""
import torch

from patchalign_ros.model import ModelConfig, PatchAlignNet

TINY = dict(trans_dim=96, depth=2, num_heads=4, encoder_dims=128, embed_widths=[32, 64, 128], text_dim=384, num_group=32,
            group_size=16, num_points=512)
FULL = dict(trans_dim=384, depth=12, num_heads=6, encoder_dims=256, text_dim=1280, num_group=128,
            group_size=32, num_points=2048)


def random_net(seed: int = 0, **overrides) -> PatchAlignNet:
    """A network with every parameter and BatchNorm statistic randomised (deterministically)."""
    cfg = ModelConfig(**{**TINY, **overrides})
    torch.manual_seed(seed)
    net = PatchAlignNet(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith("log_scale"):
                tensor.fill_(2.5)
            elif "norm" in name and name.endswith("weight"):
                tensor.copy_(1.0 + 0.1 * torch.randn(tensor.shape, generator=gen))
            else:
                fan_in = tensor.shape[1] if tensor.dim() > 1 else 50
                tensor.copy_(torch.randn(tensor.shape, generator=gen) / fan_in ** 0.5)
    return net.eval()
