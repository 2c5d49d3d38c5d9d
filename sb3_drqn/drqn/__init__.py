from sb3_drqn.drqn.drqn import RecurrentDQN
from sb3_drqn.drqn.policies import CnnLstmPolicy, MlpLstmPolicy, MultiInputLstmPolicy, RecurrentDQNPolicy

__all__ = ["CnnLstmPolicy", "MlpLstmPolicy", "MultiInputLstmPolicy", "RecurrentDQN", "RecurrentDQNPolicy"]
