"""
RecurrentDQN's sampler and converter for rl-zoo3's optimizer (``python -m rl_zoo3.train --algo drqn -optimize``).

The sampler bounds what a trial costs per env step. An update of RecurrentDQN reads ``batch_size`` windows of
``burn_in + sequence_length + n_steps`` steps and learns on ``batch_size x sequence_length`` of them; sampling
``batch_size``, ``sequence_length``, ``train_freq`` and ``gradient_steps`` independently (as the zoo does for
``dqn``) lets one trial cost a hundred times another. Instead the sampler draws:

- ``learning_steps``: learning steps per update (``batch_size x sequence_length``), from :data:`LEARNING_STEPS`;
- ``replay_ratio``: learning steps per env step (``learning_steps x gradient_steps / train_freq``), from
  :data:`REPLAY_RATIOS`;
- ``sequence_length`` and the burn-in as a fraction of it (at most the window itself),

and derives ``batch_size``, ``burn_in``, ``train_freq`` and ``gradient_steps`` from them. The recurrent layer
and the head stay small (:data:`LSTM_HIDDEN_SIZES`, :data:`NET_ARCHS`).

On CPU an update's fixed cost (the recurrent layer's steps one after the other) weighs as much as its
learning steps, so the cost per env step grows with the replay ratio and with the number of updates per env
step (``replay_ratio / learning_steps``, here from 1/16 to 1/2: one update every 2 to 16 env steps).
The bounds cover what our benchmarks found useful (``hyperparams/drqn.yml``, README, ``docs/zoo.md``): the
tuned CartPole entries' 640 learning steps per update (64 windows of 10) at a replay ratio of 160 (an update
every 4 env steps), the CartPole-v1 study's fifth trial (128 windows of 8 every 4 steps: 1024 and 256),
MountainCarNoVel-v0's 512 at 256, windows of 10 to 20 steps and 64 to 128 recurrent units.
"""

from typing import Any

import optuna

# Keys of a drqn trial that go to ``policy_kwargs`` rather than to RecurrentDQN
RECURRENT_POLICY_KEYS = ("lstm_hidden_size", "n_lstm_layers", "rnn_type", "dueling")

#: Learning steps per update, ``batch_size x sequence_length``
LEARNING_STEPS = (512, 768, 1024)
#: Learning steps per env step, ``batch_size x sequence_length x gradient_steps / train_freq``
REPLAY_RATIOS = (64, 128, 256)
#: Window lengths (learning steps per window); each divides every entry of :data:`LEARNING_STEPS`
SEQUENCE_LENGTHS = (8, 16, 32)
#: Burn-in as a fraction of the window length
BURN_IN_FRACTIONS = (0.0, 0.5, 1.0)
#: Units of the recurrent layer
LSTM_HIDDEN_SIZES = (32, 64, 128)
#: Q-value head after the recurrent layer
NET_ARCHS = {"64": [64], "64-64": [64, 64], "128": [128]}
#: n-step returns inside each window
N_STEPS = (1, 3, 5)


def update_schedule(learning_steps: int, replay_ratio: int) -> tuple[int, int]:
    """
    ``train_freq`` and ``gradient_steps`` for a replay ratio (one env, no vectorisation).

    :param learning_steps: Learning steps per update (``batch_size x sequence_length``)
    :param replay_ratio: Learning steps per env step
    :return: ``(train_freq, gradient_steps)``: one update every ``learning_steps / replay_ratio`` env steps
        when that is at least one, else ``replay_ratio / learning_steps`` updates every env step (never fewer
        than one update)
    """
    if replay_ratio <= learning_steps:
        return max(round(learning_steps / replay_ratio), 1), 1
    return 1, max(round(replay_ratio / learning_steps), 1)


def _convert_earlier_sampler_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    # Trials of the sampler before bounded costs (batch_size_pow, train_freq, subsample_steps, the zoo's
    # net_arch names): rl-zoo3's own off-policy converter, kept so that `--trial-id` still reads such studies
    from rl_zoo3.hyperparams_opt import convert_offpolicy_params

    params = dict(sampled_params)
    recurrent_kwargs = {key: params.pop(key) for key in RECURRENT_POLICY_KEYS if key in params}
    hyperparams = convert_offpolicy_params(params)
    hyperparams["policy_kwargs"].update(recurrent_kwargs)
    return hyperparams


def convert_drqn_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    Turn a drqn trial's parameters (as sampled, or as stored in an Optuna study) into RecurrentDQN arguments.

    ``gamma`` comes from ``one_minus_gamma``; ``batch_size`` (``learning_steps / sequence_length``),
    ``burn_in`` (``burn_in_fraction x sequence_length``), ``train_freq`` and ``gradient_steps``
    (:func:`update_schedule`) are derived; ``net_arch`` (a key of :data:`NET_ARCHS`), the recurrent layer's
    parameters and ``dueling`` go to ``policy_kwargs``; the rest (``learning_rate``, exploration,
    ``target_update_interval``, ``recurrent_init``, ``n_steps``, ``prioritized_replay``, ``value_rescaling``)
    is passed as it is. Trials of the earlier sampler (with ``batch_size_pow``) are converted as they were,
    by rl-zoo3's :func:`~rl_zoo3.hyperparams_opt.convert_offpolicy_params`.

    :param sampled_params: The trial's parameters
    :return: The hyper-parameters for RecurrentDQN
    """
    if "batch_size_pow" in sampled_params:
        return _convert_earlier_sampler_params(sampled_params)
    params = dict(sampled_params)
    policy_kwargs: dict[str, Any] = {"net_arch": list(NET_ARCHS[params.pop("net_arch")])}
    policy_kwargs.update({key: params.pop(key) for key in RECURRENT_POLICY_KEYS if key in params})
    learning_steps = params.pop("learning_steps")
    replay_ratio = params.pop("replay_ratio")
    sequence_length = params["sequence_length"]
    train_freq, gradient_steps = update_schedule(learning_steps, replay_ratio)
    params.update(
        gamma=1 - params.pop("one_minus_gamma"),
        batch_size=max(learning_steps // sequence_length, 1),
        burn_in=round(params.pop("burn_in_fraction") * sequence_length),
        train_freq=train_freq,
        gradient_steps=gradient_steps,
        policy_kwargs=policy_kwargs,
    )
    return params


def sample_drqn_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for RecurrentDQN hyper-parameters, with a bounded cost per env step (see the module's docstring):
    learning steps per update and replay ratio, window length and burn-in fraction, DQN's learning rate,
    discount, exploration and target-update period (rl-zoo3's ``dqn`` ranges), the recurrent layer (type,
    units, initial state of the windows), the head, and R2D2's options (n-step returns, prioritized replay,
    value rescaling, dueling head). Every trial makes gradient updates: one every 2 to 16 env steps.

    The derived settings are stored as the trial's user attributes (``gamma``, ``batch_size``, ``burn_in``,
    ``train_freq``, ``gradient_steps``).

    :param trial: The Optuna trial
    :param n_actions: Number of actions (unused: the action space is discrete)
    :param n_envs: Number of envs (unused: the replay ratio is per env step of one env)
    :param additional_args: rl-zoo3's extra information (unused: no HER with drqn)
    :return: The sampled hyper-parameters, converted for RecurrentDQN
    """
    sampled = {
        # DQN's (rl-zoo3's ranges for dqn)
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 0.0001, 0.03, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 0.002, log=True),
        "exploration_fraction": trial.suggest_float("exploration_fraction", 0, 0.5),
        "exploration_final_eps": trial.suggest_float("exploration_final_eps", 0, 0.2),
        "target_update_interval": trial.suggest_int("target_update_interval", 1, 20000, log=True),
        # The cost of a trial per env step
        "learning_steps": trial.suggest_categorical("learning_steps", LEARNING_STEPS),
        "replay_ratio": trial.suggest_categorical("replay_ratio", REPLAY_RATIOS),
        "sequence_length": trial.suggest_categorical("sequence_length", SEQUENCE_LENGTHS),
        "burn_in_fraction": trial.suggest_categorical("burn_in_fraction", BURN_IN_FRACTIONS),
        # Network
        "net_arch": trial.suggest_categorical("net_arch", list(NET_ARCHS)),
        "lstm_hidden_size": trial.suggest_categorical("lstm_hidden_size", LSTM_HIDDEN_SIZES),
        "rnn_type": trial.suggest_categorical("rnn_type", ["lstm", "gru"]),
        "recurrent_init": trial.suggest_categorical("recurrent_init", ["stored", "zero"]),
        # R2D2's options
        "n_steps": trial.suggest_categorical("n_steps", N_STEPS),
        "prioritized_replay": trial.suggest_categorical("prioritized_replay", [False, True]),
        "value_rescaling": trial.suggest_categorical("value_rescaling", [False, True]),
        "dueling": trial.suggest_categorical("dueling", [False, True]),
    }
    hyperparams = convert_drqn_params(sampled)
    for key in ("gamma", "batch_size", "burn_in", "train_freq", "gradient_steps"):
        trial.set_user_attr(key, hyperparams[key])
    return hyperparams
