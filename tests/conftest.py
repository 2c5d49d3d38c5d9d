import torch as th

# Tests are small: one thread avoids oversubscription on CI's two cores and keeps timings stable
th.set_num_threads(1)
