import numpy as np

from bidfilter.thrift.types import PartnerDecision

class Forest:
    def __init__(
        self,
        feature: np.ndarray,
        value: np.ndarray,
        left: np.ndarray,
        right: np.ndarray,
        flags: np.ndarray,
        cat_offset: np.ndarray,
        cat_words: np.ndarray,
        cat_bits: np.ndarray,
        roots: np.ndarray,
        n_features: int,
        partner_feature: int,
        base_margin: float,
        keyed: np.ndarray = ...,
    ) -> None: ...
    def predict_shared(
        self,
        row: np.ndarray | bytes,
        partners: np.ndarray,
        out: np.ndarray,
        keyed: bytes | np.ndarray = ...,
    ) -> None: ...
    def predict_rows(self, rows: np.ndarray, out: np.ndarray) -> None: ...

def decide(
    scores: np.ndarray,
    cutoffs: np.ndarray,
    thresholds: list[float],
    names: list[str],
    keys: list[bytes],
    seed: int,
    probabilities: list[float],
    decision: type[PartnerDecision],
) -> tuple[list[PartnerDecision], list[bool], list[bool]]: ...
