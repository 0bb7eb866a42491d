"""The router: calibrated reuse-or-create decisions for new tasks, and routing of single inputs.

Flow: ``features`` describes a task -> ``evidence`` compares it with each stored task on that
task's own scale -> ``calibration`` turns the evidence into a calibrated probability ->
``decision`` reuses the best adapter above a data-chosen threshold or creates one -> ``store``
keeps profiles in the library -> ``routing`` sends each input to a stored task.
``baseline`` is the original design (softmax over cosines, fixed 0.4), kept for comparison.
"""

from .baseline import SoftmaxThresholdRouter
from .calibration import Combiner, expected_calibration_error
from .decision import CandidateScore, RouteDecision, Router, RouterConfig
from .evidence import TaskProfile
from .routing import InputRouter, RoutedInput
from .service import ROUTERS, LibraryRouter, make_decider
from .store import load_profiles

__all__ = ["ROUTERS", "CandidateScore", "Combiner", "InputRouter", "LibraryRouter", "RouteDecision",
           "RoutedInput", "Router", "RouterConfig", "SoftmaxThresholdRouter", "TaskProfile",
           "expected_calibration_error", "load_profiles", "make_decider"]
