"""Feature taps: capture intermediate feature maps of any network through forward hooks on module paths.

No network is rewritten or subclassed, so every BasicSR architecture works as teacher or student. Paths are resolved
when the taps are made, so a wrong path fails at start-up with the valid names, not at iteration 1000.
"""
import difflib
from typing import List, Optional, Sequence

import torch
from torch import nn


def resolve_module(net: nn.Module, path: str, option: str) -> nn.Module:
    """``net.get_submodule(path)`` with an error that names ``option`` and lists close and valid module paths."""
    names = [name for name, _ in net.named_modules() if name]
    if path in names:
        return net.get_submodule(path)
    close = difflib.get_close_matches(path, names, n=5, cutoff=0.5)
    top = [name for name in names if '.' not in name]
    hint = f' Close matches: {", ".join(close)}.' if close else ''
    raise ValueError(f'{option}: no module {path!r} in {type(net).__name__}.{hint} '
                     f'Top-level modules: {", ".join(top)} (nest with dots, e.g. {top[0]}.0).')


def as_feature_map(output, inputs) -> torch.Tensor:
    """A hooked module output as a (N, C, H, W) tensor.

    Tuples give their first tensor. Token sequences (N, H*W, C), as SwinIR's layers return them with their input
    ``x_size = (H, W)``, are folded back into maps.
    """
    if isinstance(output, (tuple, list)):
        output = next(v for v in output if torch.is_tensor(v))
    if output.dim() == 4:
        return output
    if output.dim() == 3:
        size = next((v for v in inputs if isinstance(v, (tuple, list, torch.Size)) and len(v) == 2), None)
        if size is not None and size[0] * size[1] == output.shape[1]:
            n, _, c = output.shape
            return output.transpose(1, 2).reshape(n, c, int(size[0]), int(size[1]))
    raise ValueError(f'a tapped module returned a tensor of shape {tuple(output.shape)}; '
                     'taps need (N, C, H, W) maps or (N, H*W, C) tokens with an (H, W) input')


class FeatureTaps:
    """Forward hooks that record the outputs of ``paths`` in ``net``, in order, inside ``with taps:``.

    Lifetime: by default the hooks exist only inside ``with taps:`` (FACDModel enters it around the training step's
    forward passes), so validation, EMA updates, saving, ``torch.jit.script`` or anything else done with the network
    never meets a hook, and nothing is left behind. ``persistent=True`` registers the hooks once, at construction,
    and ``with taps:`` only switches recording on: ``torch.compile`` traces the hooks a module has when it compiles
    and does not notice hooks added later, so a compiled network needs them there from the start. :meth:`detach`
    removes them in both modes. Paths are resolved at construction, so a wrong path fails at start-up.

    Copies: BasicSR's EDSR and RCAN add the global skip in place (``res += x``) onto the output of
    ``conv_after_body``, which would change a stored reference after the hook ran. So the first recorded pass copies
    every map and watches the originals' version counters; from then on only the taps whose output was written in
    place get a copy, the others are stored as they are (a map that is float32 and contiguous already; others are
    converted, which is a copy anyway). A later pass that writes into a map stored uncopied raises at :meth:`pop`
    instead of handing over a changed map. Persistent taps (compiled networks) always copy.

    Args:
        net (nn.Module): the bare network (not a DDP wrapper).
        paths (Sequence[str]): module paths such as ``body.4`` or ``conv_after_body``.
        option (str): the option name used in error messages, e.g. ``distill.student_taps``.
        persistent (bool): keep the hooks registered between ``with`` blocks (for compiled networks). Default: False.
    """

    def __init__(self, net: nn.Module, paths: Sequence[str], option: str, persistent: bool = False) -> None:
        self.paths = list(paths)
        self.option = option
        self.persistent = persistent
        self.recording = False
        self._modules = [resolve_module(net, path, option) for path in self.paths]
        self._hooks = [self._make_hook(i) for i in range(len(self.paths))]
        self._handles = []
        self._features: List[Optional[torch.Tensor]] = [None] * len(self.paths)
        # per tap: None until the first recorded pass has shown whether the module's output is written in place
        self.needs_copy: List[Optional[bool]] = [True if persistent else None] * len(self.paths)
        self._watched: List[Optional[tuple]] = [None] * len(self.paths)  # (map, its version) when stored uncopied
        if persistent:
            self.attach()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> None:
        """Register the hooks (attaching attached taps changes nothing)."""
        if not self._handles:
            self._handles = [module.register_forward_hook(hook) for module, hook in zip(self._modules, self._hooks)]

    def detach(self) -> None:
        """Remove the hooks from the network; maps recorded so far stay available to :meth:`pop`."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> 'FeatureTaps':
        self.attach()
        self.recording = True
        return self

    def __exit__(self, *exc_info) -> None:
        self.recording = False
        if not self.persistent:
            self.detach()

    def _make_hook(self, index: int):

        def hook(module, inputs, output):
            if not self.recording:
                return
            # float32 in the default layout (the teacher may run under autocast or channels_last)
            feature = as_feature_map(output, inputs)
            needs_copy = self.needs_copy[index]
            if needs_copy is True or feature.is_inference():  # inference tensors have no version counter
                self._features[index] = feature.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
                return
            if needs_copy is False and feature.dtype == torch.float32 and feature.is_contiguous():
                stored = feature  # (``.to`` with a memory_format would copy even here)
            else:
                stored = feature.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
            watched = feature if needs_copy is None else stored  # learning: the original; else what is handed over
            self._features[index] = stored
            self._watched[index] = (watched, watched._version)

        return hook

    def pop(self) -> List[torch.Tensor]:
        """The maps recorded by the last forward pass, in tap order; the store is cleared."""
        missing = [path for path, feat in zip(self.paths, self._features) if feat is None]
        if missing:
            raise RuntimeError(f'{self.option}: {", ".join(missing)} did not run in the last forward pass')
        for index, watched in enumerate(self._watched):
            if watched is None:
                continue
            written = watched[0]._version != watched[1]
            if self.needs_copy[index] is None:
                self.needs_copy[index] = written  # learnt from the first recorded pass, whose maps were copies
            elif written:
                raise RuntimeError(f'{self.option}: the output of {self.paths[index]} was modified in place after '
                                   'its hook ran, although the first pass did not do so; the stored map is stale')
        self._watched = [None] * len(self.paths)
        feats, self._features = self._features, [None] * len(self.paths)
        return feats
