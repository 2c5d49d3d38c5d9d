from typing import Any

import optuna

# Keys of a drqn trial that go to ``policy_kwargs`` rather than to RecurrentDQN
RECURRENT_POLICY_KEYS = ("lstm_hidden_size", "n_lstm_layers", "rnn_type", "dueling")


def convert_drqn_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    Turn a drqn trial's parameters (as sampled, or as stored in an Optuna study) into RecurrentDQN arguments.

    The DQN part is rl-zoo3's own :func:`~rl_zoo3.hyperparams_opt.convert_offpolicy_params` (``gamma`` from
    ``one_minus_gamma``, ``batch_size`` from ``batch_size_pow``, ``gradient_steps`` from ``train_freq`` and
    ``subsample_steps``, ``net_arch`` and ``activation_fn`` into ``policy_kwargs``); the recurrent layer's
    parameters and ``dueling`` join ``policy_kwargs``; ``sequence_length``, ``burn_in``, ``recurrent_init``,
    ``double_q`` and R2D2's ``n_steps``, ``prioritized_replay`` and ``value_rescaling`` are passed as they are.

    :param sampled_params: The trial's parameters
    :return: The hyper-parameters for RecurrentDQN
    """
    # Imported here, not at the top: importing this module first must not import rl_zoo3, whose import hook
    # would then register drqn while this module is still half-initialised (and fail)
    from rl_zoo3.hyperparams_opt import convert_offpolicy_params

    params = dict(sampled_params)
    recurrent_kwargs = {key: params.pop(key) for key in RECURRENT_POLICY_KEYS if key in params}
    hyperparams = convert_offpolicy_params(params)
    hyperparams["policy_kwargs"].update(recurrent_kwargs)
    return hyperparams


def sample_drqn_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for RecurrentDQN hyper-parameters: DQN's (as rl-zoo3 samples them for ``dqn``, with smaller
    batches, since a batch is ``batch_size`` windows of ``burn_in + sequence_length`` steps) and the recurrent
    ones: window length, burn-in, initial state of the windows, size and type of the recurrent layer, and R2D2's
    options (n-step returns, prioritized replay, value rescaling, dueling head).

    :param trial: The Optuna trial
    :param n_actions: Number of actions (unused: the action space is discrete)
    :param n_envs: Number of envs (unused)
    :param additional_args: rl-zoo3's extra information (unused: no HER with drqn)
    :return: The sampled hyper-parameters, converted for RecurrentDQN
    """
    one_minus_gamma = trial.suggest_float("one_minus_gamma", 0.0001, 0.03, log=True)
    # From 2**3=8 to 2**7=128 windows
    batch_size_pow = trial.suggest_int("batch_size_pow", 3, 7)
    learning_rate = trial.suggest_float("learning_rate", 1e-5, 0.002, log=True)
    train_freq = trial.suggest_int("train_freq", 1, 10)
    subsample_steps = trial.suggest_int("subsample_steps", 1, min(train_freq, 8))
    exploration_final_eps = trial.suggest_float("exploration_final_eps", 0, 0.2)
    exploration_fraction = trial.suggest_float("exploration_fraction", 0, 0.5)
    target_update_interval = trial.suggest_int("target_update_interval", 1, 20000, log=True)
    # MLP head after the recurrent layer
    net_arch = trial.suggest_categorical("net_arch", ["small", "medium", "big"])
    # Recurrent part
    sequence_length = trial.suggest_categorical("sequence_length", [4, 8, 16, 32])
    burn_in = trial.suggest_categorical("burn_in", [0, 4, 8, 16])
    recurrent_init = trial.suggest_categorical("recurrent_init", ["stored", "zero"])
    lstm_hidden_size = trial.suggest_categorical("lstm_hidden_size", [32, 64, 128, 256])
    rnn_type = trial.suggest_categorical("rnn_type", ["lstm", "gru"])
    # R2D2's options
    n_steps = trial.suggest_categorical("n_steps", [1, 3, 5])
    prioritized_replay = trial.suggest_categorical("prioritized_replay", [False, True])
    value_rescaling = trial.suggest_categorical("value_rescaling", [False, True])
    dueling = trial.suggest_categorical("dueling", [False, True])

    trial.set_user_attr("gamma", 1 - one_minus_gamma)
    trial.set_user_attr("batch_size", 2**batch_size_pow)

    return convert_drqn_params(
        {
            "one_minus_gamma": one_minus_gamma,
            "learning_rate": learning_rate,
            "batch_size_pow": batch_size_pow,
            "train_freq": train_freq,
            "subsample_steps": subsample_steps,
            "exploration_fraction": exploration_fraction,
            "exploration_final_eps": exploration_final_eps,
            "target_update_interval": target_update_interval,
            "net_arch": net_arch,
            "sequence_length": sequence_length,
            "burn_in": burn_in,
            "recurrent_init": recurrent_init,
            "lstm_hidden_size": lstm_hidden_size,
            "rnn_type": rnn_type,
            "n_steps": n_steps,
            "prioritized_replay": prioritized_replay,
            "value_rescaling": value_rescaling,
            "dueling": dueling,
        }
    )
