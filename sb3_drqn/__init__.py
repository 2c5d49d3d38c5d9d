import os

from sb3_drqn.common.buffers import PrioritizedRecurrentReplayBuffer, RecurrentReplayBuffer
from sb3_drqn.drqn import CnnLstmPolicy, MlpLstmPolicy, MultiInputLstmPolicy, RecurrentDQN, RecurrentDQNPolicy

# Read version from file
version_file = os.path.join(os.path.dirname(__file__), "version.txt")
with open(version_file) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = [
    "CnnLstmPolicy",
    "MlpLstmPolicy",
    "MultiInputLstmPolicy",
    "PrioritizedRecurrentReplayBuffer",
    "RecurrentDQN",
    "RecurrentDQNPolicy",
    "RecurrentReplayBuffer",
    "__version__",
]
