"""Every hyperparameter of the FOSP agent, in one dataclass tree.

Sources, in order of precedence: the paper's Table 4 and App. B/C; where those are silent, the
official code (JAX, built on SafeDreamer / DreamerV3); where that is silent too, DreamerV3's
defaults, and each such value says so. The dataclass defaults ARE the paper preset, so a YAML
file only lists what it changes.

Two presets: ``paper()`` (Table 4) and ``cpu()`` (small enough that a world-model plus
actor-critic step on a 16 x 16 batch of 64x64 images takes about a second or less on 2 cores).
``config_by_name`` resolves 'paper' | 'cpu' | a YAML file path.

Reading notes on Table 4:
- "Penalty term nu = 5^{-9}" and "Initial penalty multiplier mu^0 = 1^{-6}" are read as 5e-9
  and 1e-6 (a superscript lost its base 10). nu is the growth of mu per update:
  mu <- min(mu * (1 + nu), mu_max), as in LAMBDA / SafeDreamer.
- Table 4's "Coefficient of KL-divergence beta = 0.1" is the representation weight of eq. 1.
  Eq. 1 prints the dynamics KL unweighted; the official code keeps DreamerV3's 0.5, used here.
- "AWR temperature beta_1, beta_2 = 10" multiplies the advantage, exp(beta * A), as eq. 19
  writes it (IQL's inverse temperature), rather than dividing it.
- Batch B x T = 64 x 16 follows Table 4; the official code samples 16 x 64.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from fosp_core.envs.state_layout import STATE_DIM
from fosp_core.util.config import merge
from fosp_core.util.errors import UserError
from fosp_core.util.files import read_mapping

ALGOS = ("fosp", "dreamer", "safedreamer", "fosp-no-insample", "fosp-no-ref", "fosp-no-auglag")
OBS_MODES = ("image", "state")
LATENT_INPUTS = ("sample", "mode")
ACTOR_DISTRIBUTIONS = ("normal", "truncated_normal")  # networks.ActorHead
ACTOR_INPUTS = ("features", "observation", "obstacle_set")
ONLINE_ACTOR_INITS = ("fresh", "copy")
ONLINE_ACTOR_LOSSES = ("eq23", "in_sample", "safe_success")


@dataclass
class ModelConfig:
    """World model (eq. 1): RSSM sizes, heads, loss weights and its optimiser."""

    deter: int = 512  # GRU state h; official code (Table 4 is silent)
    stoch: int = 48  # N_l, number of categorical latents (Table 4)
    classes: int = 48  # C_l, classes per latent (Table 4)
    hidden: int = 512  # N_units (Table 4), every MLP and the RSSM's input/output layers
    mlp_layers: int = 5  # N_MLP (Table 4)
    cnn_depth: int = 32  # channels of the first conv layer, doubling per layer; official code
    unimix: float = 0.01  # mix 1% uniform into every latent categorical (DreamerV3)
    free_bits: float = 1.0  # nats; KL terms below this are not pushed further (DreamerV3)
    kl_dyn: float = 0.5  # weight of KL[sg(q) || p], trains the prior (official code)
    kl_rep: float = 0.1  # beta of eq. 1, weight of KL[q || sg(p)], trains the encoder (Table 4)
    bins: int = 255  # two-hot bins of the reward, cost and critic heads (official code)
    bin_low: float = -20.0  # bins span [low, high] in symlog space (DreamerV3)
    bin_high: float = 20.0
    # Costs are rare, so a cost head trained on plain cross-entropy learns "always 0".
    # Steps with cost >= 1 weigh this much in the cost loss (SafeDreamer's cost_weight).
    cost_weight: float = 10.0
    # Weight of the pose / state reconstruction terms (DreamerV3: 1). A low-dimensional
    # vector costs little to reconstruct badly next to the KL terms, so at an episode's first
    # step, where the latent must carry the whole observation, a weight of 1 leaves positions
    # blurred by centimetres, and the twin's obstacles are 2 cm from the start
    # (docs/implementation.md).
    vector_weight: float = 1.0
    lr: float = 1e-4  # l_wm (Table 4)
    eps: float = 1e-8  # Adam epsilon (DreamerV3)
    grad_clip: float = 1000.0  # global grad-norm clip (DreamerV3)
    # Not in the paper (0 = off): image augmentation of the world model's training batches
    # (fosp_core.agent.augment), so that a moved camera or another light is not a new input.
    # Each sequence is shifted by up to aug_shift pixels (DrQ's pad-and-crop) and each of its
    # colour channels scaled by a gain drawn in [1 - aug_light, 1 + aug_light], in every
    # world-model update, pretraining and fine-tuning alike.
    aug_shift: int = 0
    aug_light: float = 0.0


@dataclass
class ActorCriticConfig:
    """Imagination, critics (sec. 4.1), actor (eq. 20) and the REF network (eq. 30)."""

    horizon: int = 15  # H, imagination horizon (Table 4)
    discount: float = 0.997  # gamma (Table 4)
    lambda_reward: float = 0.95  # lambda_r of TD(lambda), eq. 8 (Table 4)
    lambda_cost: float = 0.95  # lambda_c (Table 4)
    # kappa of eq. 7, for V of the reward (Table 4). The weight kappa goes where Q > V, so V
    # is the upper kappa-expectile of Q (see math.expectile_loss).
    expectile: float = 0.8
    # The same for V of the cost; 0.8 makes V^c an upper expectile of Q^c, i.e. pessimistic
    # about cost. Set 0.2 for the optimistic, lower expectile (FISOR-style in-sample min).
    cost_expectile: float = 0.8
    awr_beta_reward: float = 10.0  # beta_1 of eq. 19, multiplies A^r inside exp (Table 4)
    awr_beta_cost: float = 10.0  # beta_2 of eq. 19 (Table 4)
    # Divide A^r, A^c of eq. 19 by the return range (DreamerV3, official code). Eq. 19 does
    # not: exp(beta * A) with raw advantages. With SafeReach's returns (range ~50 for reward,
    # ~20 for cost) the division left weights within a few percent of 1, i.e. behaviour
    # cloning of the whole mix, violations included. Off has not yet done better in full
    # training, so both presets keep it on (docs/implementation.md).
    awr_normalise: bool = True
    # Subtract the batch mean of A^r and A^c before exp(): exp(beta * A) with raw advantages
    # otherwise saturates the max_weight clip for a whole batch at once.
    awr_center: bool = False
    # What the actor, critics and REF read of a model state: "sample" = [h, z] with z the
    # sampled latent (DreamerV3), "mode" = [h, one-hot argmax of z's distribution]. At an
    # episode's first step the posterior is wide, and a sampled z made the actor's input
    # noisy exactly where SafeReach's route around the obstacles is decided.
    latent_input: str = "sample"
    awr_max_weight: float = 100.0  # exp(beta * A) is clipped here, as in IQL
    entropy: float = 3e-4  # eta of eq. 20 (Table 4)
    ref_discount: float = 0.99  # gamma_u of eq. 30 (Table 4, official code)
    actor_lr: float = 3e-5  # l_ac (Table 4)
    critic_lr: float = 3e-5  # l_ac (Table 4)
    # App. B: the REF learns faster than the critics and the actor (Table 4: 5e-5 > 3e-5).
    ref_lr: float = 5e-5
    eps: float = 1e-5  # Adam epsilon of actor, critics, REF (DreamerV3)
    grad_clip: float = 100.0  # global grad-norm clip per network (DreamerV3)
    actor_min_std: float = 0.1  # the actor's std lies in [min, max] (DreamerV3)
    actor_max_std: float = 1.0
    # The actor's distribution (networks.ACTOR_DIST_CLASSES): "truncated_normal" (default)
    # or "normal", DreamerV3's bounded normal. Cloning on the true state, the truncated one's
    # mean overshoots towards the bounds and its clones cut corners; in full FOSP training
    # through the world model's features "normal" violated more (docs/implementation.md).
    actor_dist: str = "truncated_normal"
    # What the actor reads (the critics and the REF always read the model state):
    # "features" (the paper, DreamerV3) or, in state mode only, "observation": the state
    # itself where there is one (dataset rows, acting) and the world model's reconstruction of
    # it in imagination. Cloning through the features violates far more often than on the
    # true state: the latent blurs the centimetres by which the demonstrations clear the
    # obstacles (docs/implementation.md). "obstacle_set" reads the same state as
    # the gripper's view of a set: target and every obstacle relative to the gripper, the
    # obstacles through one shared encoder pooled over the slots (networks.ObstacleSetEncoder),
    # so a task with more obstacles than the data (safereach-more-obstacles) shows the actor
    # one more obstacle, not a slot it never saw filled.
    actor_input: str = "features"
    slow_critic_fraction: float = 0.02  # EMA rate of the target critics (DreamerV3)
    # Percentile return normalisation of advantages (DreamerV3, kept by the official code):
    # scale = max(retnorm_limit, EMA(P95) - EMA(P5)).
    retnorm_decay: float = 0.99
    retnorm_limit: float = 1.0
    retnorm_low: float = 5.0
    retnorm_high: float = 95.0


@dataclass
class FospConfig:
    """Safety: the augmented Lagrangian (eq. 17, 27) and policy expansion (eq. 21-22)."""

    # Feasibility asks V^c(s) = 0 (eq. 13, 15), so the constraint violation fed to the
    # Lagrangian is g = V^c - cost_limit with limit 0. SafeDreamer's own budget is 2.0.
    cost_limit: float = 0.0
    lagrange_init: float = 0.01  # lambda_p^0 (Table 4)
    penalty_init: float = 1e-6  # mu^0 (Table 4, read as 1e-6)
    penalty_growth: float = 5e-9  # nu (Table 4, read as 5e-9): mu <- mu * (1 + nu)
    penalty_max: float = 1.0  # mu never grows past this (LAMBDA / SafeDreamer)
    # The feasible part of eq. 19 only for dataset actions with Q^c <= V^c, i.e. actions that
    # do not raise the cost value (the official code multiplies by 1[Q^c <= 0]): AWR otherwise
    # imitates a high-reward action that leads into a violation from a still-feasible state.
    feasible_mask: bool = False
    # alpha of eq. 21 (Table 4), used as an inverse temperature (see fosp_core.agent.pex).
    pex_temperature: float = 10.0
    # r_max, c_max and T of eq. 22: Q-hat* = sum_{t=0}^{T} gamma^t r_max. SafeReach rewards
    # and costs are 0/1 per step and an episode is 80 control steps. A smaller cost_max
    # weighs eq. 22's cost term more (benchmarks/pex_ranking.py --data shows how it ranks).
    reward_max: float = 1.0
    cost_max: float = 1.0
    pex_horizon: int = 80
    # The new policy of sec. 4.3 starts 'fresh' (random, as in PEX) or as a 'copy' of the
    # offline one. Fresh relies on the critics to rank its random proposals below the offline
    # policy's; critics trained in-sample on the dataset's actions cannot be trusted to.
    online_actor_init: str = "fresh"
    # The loss that trains the new policy online: 'eq23' (the paper: eq. 23's weights on the
    # new policy's own imagined actions, no behaviour constraint) or 'in_sample' (eq. 19 as
    # offline, on the replay, which now holds the new trajectories too: IQL-style fine-tuning).
    # eq. 23 trusts Q at actions the critics never saw in data; in_sample never asks for them.
    # 'safe_success' departs from the paper: weight 1 on every replay row of a trajectory that
    # reached the target without a cost, 0 elsewhere (filtered behaviour cloning, as
    # ``fosp extract --weights safe-success`` offline), so each safe success the robot adds
    # is imitated and each violation is not, whatever the critics make of it.
    online_actor_loss: str = "eq23"
    # The learning rate of the actor being fine-tuned (the new one with expansion, the offline
    # one without): Table 4's l_ac. The ``cpu`` preset trains offline at ten times that, to
    # finish on a CPU; online at that rate the fine-tuned policy swung into violations
    # within a few rounds, and at this one it stayed steady (docs/implementation.md).
    online_actor_lr: float = 3e-5
    # With 'safe_success' only: the weight of each row of a safe successful fine-tuning
    # trajectory, where a demonstration's row weighs 1. Sampling stays uniform over the one
    # replay (the critics and the world model see every row alike); only the new actor's
    # cloning loss counts the robot's own safe successes more, so the few trajectories of
    # an unseen task are not outweighed by the dataset's 200 from the old one. 1 is plain
    # filtered behaviour cloning of the replay.
    online_success_weight: float = 1.0
    # With 'safe_success' only: hindsight "hold still once the target is touched". Every
    # action taken after its trajectory first touched the target, in the dataset and in the
    # fine-tuning trajectories alike, is cloned towards the zero action with this weight
    # instead of towards what was done (0 = off). Touching the target is the task, and half
    # of the violations while fine-tuning in image mode came after it: the arm kept pushing
    # sideways against the target, slid along it and touched an obstacle next to it. Those
    # trajectories are not safe successes, so nothing learned from them. The demonstrations
    # keep pushing into the target after the touch, so relabelling only the new
    # trajectories would ask for two different actions in the same place.
    online_hold_weight: float = 0.0
    # Acting, not in the paper (``fosp_core.agent.foresight``): once the world model foresees
    # a cost at or above this level within ``foresight_horizon`` steps of the policy's own
    # imagined path (mean over ``foresight_samples`` draws of the largest per-step cost), send
    # the zero action for the rest of the episode (0 = off). The stopped episode fails
    # instead of colliding.
    foresight_stop: float = 0.0
    foresight_horizon: int = 10
    foresight_samples: int = 8
    # With policy expansion and the stop: foresee each policy's proposal along that policy's
    # own path, and leave those foreseen to collide out of eq. 21's draw; stop only when both
    # are. Without it, the chosen proposal is foreseen with the new actor taking over.
    foresight_veto: bool = False
    # With the veto: a proposal vetoed alone is left out for the rest of the episode, as the
    # stop holds until the episode ends: its policy's own path was foreseen to collide, and
    # one step later it mostly still leads there. Off by default: it did not make PEX safer
    # than direct fine-tuning (docs/results.md).
    foresight_veto_latch: bool = False
    # Acting, not in the paper: once the labeler reports the target touched, send the zero
    # action until the episode ends (as a lab ends an episode at success). Touching the
    # target is the task; moving on can only add costs. With the foresight stop, the
    # violations PEX added over direct fine-tuning came after the touch: the frozen offline
    # policy cannot learn ``online_hold_weight``'s "hold still" and keeps pushing.
    hold_on_success: bool = False


@dataclass
class TrainConfig:
    """How the computation runs, not what it computes (``fosp_core.agent.precision``)."""

    # fp32 | bf16 | fp16 | auto: bf16 (and fp16) runs matrix multiplies and convolutions in
    # 16 bits, keeping distributions, losses, returns and optimiser states in float32; auto
    # is bf16 where the hardware runs it natively, else fp32 (the cpu preset's default).
    precision: str = "fp32"
    # Convolutions of the image encoder and decoder in NHWC (channels-last) memory layout.
    channels_last: bool = True


@dataclass
class AgentConfig:
    """The whole agent. ``algo`` picks FOSP, a baseline or an ablation of sec. 5.3."""

    # The preset this config was built from ('paper', 'cpu'; '' where not recorded): a YAML
    # file given as a config takes its missing keys from the preset it names here.
    preset: str = ""
    # The recipe (config/recipes/NAME.yaml) the run was made with; "" where none was named.
    recipe: str = ""
    algo: str = "fosp"  # one of ALGOS
    obs_mode: str = "image"  # 'image': {'image', 'pose'}; 'state': {'state'}
    state_dim: int = STATE_DIM  # length of the 'state' vector in state mode
    pose_dim: int = 6  # end-effector pose fed beside the image (sec. 5.1, App. D.1)
    action_dim: int = 6  # pose change, bounded to [-1, 1]
    image_size: int = 64  # images are image_size x image_size x 3 uint8
    batch_size: int = 64  # B (Table 4)
    batch_length: int = 16  # T (Table 4)
    action_repeat: int = 4  # n_repeat (Table 4)
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    actor_critic: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    fosp: FospConfig = field(default_factory=FospConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def actor_reads_state(self) -> bool:
        """Whether the actor reads the state observation instead of the model features."""
        return self.actor_critic.actor_input in ("observation", "obstacle_set")

    def __post_init__(self) -> None:
        choices = {
            "algo": (self.algo, ALGOS),
            "obs_mode": (self.obs_mode, OBS_MODES),
            "fosp.online_actor_init": (self.fosp.online_actor_init, ONLINE_ACTOR_INITS),
            "fosp.online_actor_loss": (self.fosp.online_actor_loss, ONLINE_ACTOR_LOSSES),
            "actor_critic.actor_dist": (self.actor_critic.actor_dist, ACTOR_DISTRIBUTIONS),
            "actor_critic.actor_input": (self.actor_critic.actor_input, ACTOR_INPUTS),
            "actor_critic.latent_input": (self.actor_critic.latent_input, LATENT_INPUTS),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        for name in ("online_success_weight", "online_hold_weight"):
            value = getattr(self.fosp, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"fosp.{name} must be a finite number >= 0, got {value!r}")
        if not (math.isfinite(self.fosp.online_actor_lr) and self.fosp.online_actor_lr > 0):
            raise ValueError("fosp.online_actor_lr must be a finite number > 0, "
                             f"got {self.fosp.online_actor_lr!r}")
        if self.fosp.online_hold_weight > 0 and self.fosp.online_actor_loss != "safe_success":
            raise ValueError("fosp.online_hold_weight needs fosp.online_actor_loss "
                             f"'safe_success', got {self.fosp.online_actor_loss!r}")
        if not (math.isfinite(self.fosp.foresight_stop) and self.fosp.foresight_stop >= 0):
            raise ValueError("fosp.foresight_stop must be a finite cost level >= 0 (0 = off), "
                             f"got {self.fosp.foresight_stop!r}")
        if self.fosp.foresight_veto and self.fosp.foresight_stop <= 0:
            raise ValueError("fosp.foresight_veto needs fosp.foresight_stop > 0 (the level "
                             "at which a proposal is foreseen to collide)")
        if self.fosp.foresight_veto_latch and not self.fosp.foresight_veto:
            raise ValueError("fosp.foresight_veto_latch needs fosp.foresight_veto")
        if self.fosp.foresight_horizon < 1 or self.fosp.foresight_samples < 1:
            raise ValueError("fosp.foresight_horizon and fosp.foresight_samples must be >= 1, "
                             f"got {self.fosp.foresight_horizon} and "
                             f"{self.fosp.foresight_samples}")
        if self.model.aug_shift < 0 or not 0 <= self.model.aug_light < 1:
            raise ValueError("model.aug_shift must be >= 0 pixels and model.aug_light in "
                             f"[0, 1), got {self.model.aug_shift} and {self.model.aug_light}")
        if self.actor_reads_state and self.obs_mode != "state":
            raise ValueError(f"actor_critic.actor_input {self.actor_critic.actor_input!r} needs "
                             "obs_mode 'state' (an actor on raw images is not offered), "
                             f"got {self.obs_mode!r}")
        if self.actor_critic.actor_input == "obstacle_set" and self.state_dim != STATE_DIM:
            raise ValueError(f"actor_critic.actor_input 'obstacle_set' reads the SafeReach "
                             f"state ({STATE_DIM} values), but state_dim is {self.state_dim}")


def paper() -> AgentConfig:
    """Table 4 of the paper (official-code values where it is silent)."""
    return AgentConfig(preset="paper")


def cpu() -> AgentConfig:
    """Small sizes and faster rates for training on a 2-core CPU.

    A 16 x 16 batch keeps a train step near half a second on two cores (``fosp bench``
    reports it); sequence length 16 is Table 4's T. On a loaded machine use
    ``torch.set_num_threads(1)``: OpenMP threads competing for cores slow every step down.
    Learning rates are raised with the smaller networks and batches, keeping App. B's order
    where it matters, the REF faster than the critics. The actor's rate is 3x the critics':
    with AWR the actor only regresses onto dataset actions, and at the critics' rate it was
    still far from them at the end of a run (docs/results.md).
    """
    base = paper()
    return dataclasses.replace(
        base,
        preset="cpu",
        batch_size=16,
        batch_length=16,
        model=dataclasses.replace(
            base.model,
            deter=256,
            stoch=16,
            classes=16,
            hidden=256,
            mlp_layers=2,
            cnn_depth=16,
            lr=3e-4,
        ),
        actor_critic=dataclasses.replace(
            base.actor_critic,
            actor_lr=3e-4,
            critic_lr=1e-4,
            ref_lr=2e-4,
        ),
        train=dataclasses.replace(base.train, precision="auto"),
    )


PRESETS = {"paper": paper, "cpu": cpu}


def config_by_name(name_or_path: str | os.PathLike, default_preset: str = "cpu") -> AgentConfig:
    """'paper' | 'cpu' | a YAML file. The file's missing keys take the values of the preset it
    names (``preset: paper``), else of ``default_preset`` (the command line's default)."""
    name = str(name_or_path)
    if name in PRESETS:
        return PRESETS[name]()
    if Path(name).is_file():
        data = read_mapping(name)
        preset = data.get("preset") or default_preset
        if preset not in PRESETS:
            raise UserError(f"{name}: preset {preset!r} is not one of {', '.join(PRESETS)}")
        return merge(PRESETS[preset](), dict(data, preset=preset))
    raise UserError(f"no agent config preset or YAML file named {name!r} (presets: "
                    f"{', '.join(PRESETS)})")
