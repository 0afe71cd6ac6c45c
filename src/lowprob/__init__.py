"""lowprob: estimate the probability of rare model outputs, and say how sure the estimate is."""

from lowprob.distributions import TokenDistribution, load_distribution
from lowprob.errors import LowprobError
from lowprob.estimators import Estimate, estimate
from lowprob.events import ArgmaxIs, Event
from lowprob.ground_truth import GroundTruth, ground_truth  # the function shadows the subpackage name
from lowprob.models import Tokenizer, Transformer, TransformerConfig, load_model

__version__ = "0.1.0"

__all__ = [
    "ArgmaxIs", "Estimate", "Event", "GroundTruth", "LowprobError", "TokenDistribution", "Tokenizer", "Transformer",
    "TransformerConfig", "__version__", "estimate", "ground_truth", "load_distribution", "load_model",
]
