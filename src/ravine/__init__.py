"""ravine: gradient-descent optimization library and lab."""

__version__ = "0.1.0"

from ravine import schedules as schedules
from ravine.gradcheck import GradcheckResult as GradcheckResult
from ravine.gradcheck import gradcheck as gradcheck
