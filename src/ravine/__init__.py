"""ravine: gradient-descent optimization library and lab."""

__version__ = "0.1.0"

from ravine import data as data
from ravine import models as models
from ravine import schedules as schedules
from ravine.gradcheck import GradcheckResult as GradcheckResult
from ravine.gradcheck import gradcheck as gradcheck
from ravine.train import EarlyStopping as EarlyStopping
from ravine.train import History as History
from ravine.train import NonFiniteLossError as NonFiniteLossError
from ravine.train import fit as fit
