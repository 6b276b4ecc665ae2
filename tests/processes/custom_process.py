"""A process defined outside the package (used by test_custom_process.py, also in subprocesses).

Heavy-ball GD from θ₀, ``m ← μ m + ∇L(φ)``, ``φ ← φ − η m``: its own iterate
and momentum are its state, so a resume that lost either would show in the
records.
"""

from selfstab.processes import Process


class HeavyBall(Process):
    name = "heavy_ball"
    default = False

    def __init__(self, *, momentum: float = 0.5):
        self.momentum = momentum
        self.phi = self.m = self.grad = None

    def start(self, ctx):
        self.phi = ctx.theta.clone()
        self.m = ctx.theta.new_zeros(ctx.theta.shape)

    def record(self, ctx):
        point = ctx.objective.at(self.phi)
        self.grad = point.grad
        return {"loss": float(point.loss), "dist_gd": float((self.phi - ctx.theta).norm()),
                "momentum_norm": float(self.m.norm())}

    def advance(self, ctx):
        self.m = self.momentum * self.m + self.grad
        self.phi = self.phi - ctx.lr * self.m

    def state_dict(self):
        return {"phi": self.phi.cpu(), "m": self.m.cpu()}

    def load_state_dict(self, state):
        self.phi = state["phi"].to(self.objective.theta0)
        self.m = state["m"].to(self.objective.theta0)
