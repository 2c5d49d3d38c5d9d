import torch as th

import sb3_drqn

# Tests are small: one thread avoids oversubscription on CI's two cores and keeps timings stable
th.set_num_threads(1)


def pytest_report_header(config):
    return f"sb3_drqn {sb3_drqn.__version__} from {sb3_drqn.__file__}"
