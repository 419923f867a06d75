"""Host networks built with random weights and nothing downloaded, for the check-host drivers."""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, Dict, Iterator

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def offline_weights() -> Iterator[None]:
    """Answer ``torch.hub`` / ``model_zoo`` downloads with the calling network's own random state.

    IRN's ``resnet50(pretrained=True)`` builds the network, downloads the ImageNet state, pops
    ``fc.*`` and loads it; here the "download" returns the state of the network being built
    (found in the caller's locals), so nothing is fetched and the weights stay random.
    """
    import torch
    import torch.utils.model_zoo
    from torch import nn

    class _State(dict):  # the hosts pop keys the random state may lack (IRN: fc.weight, fc.bias)
        def pop(self, key: Any, *default: Any) -> Any:
            return super().pop(key, None)

    def load(url: str, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        caller = sys._getframe(1)
        module = next((v for v in caller.f_locals.values() if isinstance(v, nn.Module)), None)
        if module is None:
            raise RuntimeError(f"check-host: download of {url} blocked and no network to take random weights from")
        logger.info("check-host: %s not downloaded; random weights", url)
        return _State({k: v.clone() for k, v in module.state_dict().items()})

    saved = (torch.hub.load_state_dict_from_url, torch.utils.model_zoo.load_url)
    torch.hub.load_state_dict_from_url = load
    torch.utils.model_zoo.load_url = load
    try:
        yield
    finally:
        torch.hub.load_state_dict_from_url, torch.utils.model_zoo.load_url = saved


__all__ = ["offline_weights"]
