"""DBS: trigger inversion by constrained optimisation with dynamic bound scaling (Shen, Liu, Tao, Xu,
Zhang, An, Ma and Zhang, ICML 2022, "Constrained Optimization with Dynamic Bound-scaling for
Effective NLP Backdoor Defense"; reference code PurduePAML/DBS, ``trojai_r6``).

For one candidate target label ``t`` and one trigger position, with ``x_i`` clean samples of the
other labels (source labels ``y_i``), ``E`` the input-embedding matrix restricted to the reachable
vocabulary and ``L`` trigger slots:

(E1) relaxation (the trigger is a point in the convex hull of the token embeddings, the paper's
     "bound" being the softmax temperature ``T``)::

         w = softmax(theta / T + n)    theta in R^{L x |V|},   e_trigger = w @ E

(E2) objective, with the benign reference model ``R`` of the same task (optional here; the
     reference code always has one) and its step-0 loss ``b0`` as the margin::

         loss = CE(F(x_i (+) e_trigger), t) + max(CE(R(x_i (+) e_trigger), y_i) - b0, 0)

     minimised over ``theta`` (zeros at start: the uniform hull centre) with Adam (lr 0.5,
     halved every 50 of 200 steps in the reference; here every 25 of 100 by default, the same
     schedule in half the steps, for the CPU budget of one scan).

(E3) dynamic bound scaling and rollback (Algorithm 1): once the loss first falls under the
     barrier ``B`` (0.1), every 5 steps: loss < B -> ``T /= 2`` (tighten the bound, toward one-hot);
     else roll back: ``T = min(2 T, T_max = 2)``, add uniform noise ``n ~ U(0, 10)`` to the logits for
     that step and count the rollback; after 5 rollbacks relax the barrier
     ``B = min(2 B, best_loss - 1e-3)``.

(E4) keeping a trigger: when ``w`` is within ``eps`` (0.001) of one-hot
     (``L - sum_j max_v w[j, v] < eps``) and the loss is under ``B``, its argmax tokens become the
     best trigger and ``B = best_loss / 2``.

The reference flags a model when the smallest best loss over all options is under a threshold
fitted on clean models; here every option's trigger is also re-scored discretely (real token ids
through the judged model), which is what the decision reads (see :mod:`.decide`). Departures,
each for a stated reason: the vocabulary excludes tokens no text can produce; ``punct`` positions
write the trigger over the sample's punctuation (PuncAttack); the reference's ``1 - labels`` in
the benign term is the samples' own labels (the same thing for two labels, right for more).
"""

from __future__ import annotations

import time

from pydantic import Field

from .base import SCANNERS, Inversion, MethodConfig, Scanner, discrete_inversion


class DBSConfig(MethodConfig):
    """DBS (ICML 2022): softmax relaxation over the vocabulary with a dynamically scaled temperature bound."""

    steps: int = Field(100, ge=1, le=5000, description="Adam steps per (target label, position) option (reference: "
                       "200; 100 with the schedule compressed alike keeps a MiniLM scan near 3 CPU minutes).")
    lr: float = Field(0.5, gt=0, description="Adam learning rate on the trigger logits theta.")
    lr_step: int = Field(25, ge=1, description="Halve the learning rate every this many steps (reference: 50 of 200).")
    lr_gamma: float = Field(0.5, gt=0, le=1, description="Learning-rate decay factor at each lr_step.")
    init_temp: float = Field(2.0, gt=0, description="Initial softmax temperature T (the bound).")
    max_temp: float = Field(2.0, gt=0, description="Largest temperature a rollback may restore.")
    temp_factor: float = Field(2.0, gt=1, description="T is divided (tighten) or multiplied (roll back) by this.")
    check_every: int = Field(5, ge=1, description="Steps between bound-scaling checks.")
    loss_barrier: float = Field(0.1, gt=0, description="Loss under which the bound starts tightening.")
    noise_ratio: float = Field(10.0, ge=0, description="Scale of the uniform noise added to theta/T on a rollback.")
    rollback_thres: int = Field(5, ge=1, description="Rollbacks after which the barrier is relaxed.")
    eps_one_hot: float = Field(1e-3, gt=0, description="Distance to one-hot under which a trigger is kept.")
    threshold: float = Field(0.5, description="Anomaly score (see docs/scan.md) above which a model is called "
                             "backdoored; fitted on clean models only by `slimguard bench scan --calibrate`.")


@SCANNERS.register("dbs")
class DBS(Scanner):
    name, title, config_type = "dbs", "DBS (Shen et al., ICML 2022)", DBSConfig

    def __init__(self, cfg: DBSConfig):
        super().__init__(cfg)
        self.cfg: DBSConfig = cfg

    def invert(self, model, batch, target, *, generator, progress=None) -> Inversion:
        import torch
        import torch.nn.functional as F

        c, t0 = self.cfg, time.perf_counter()
        L, V = batch.slots.shape[1], model.E.shape[0]
        theta = torch.zeros(L, V, requires_grad=True)
        opt = torch.optim.Adam([theta], lr=c.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, c.lr_step, gamma=c.lr_gamma)
        tgt = torch.full((batch.size,), target, dtype=torch.long)
        temp, barrier, scaling, rollbacks, total_rollbacks = c.init_temp, c.loss_barrier, False, 0, 0
        best_ids, best_loss, ce_val, bound0 = None, float("inf"), float("inf"), None
        for step in range(c.steps):
            noise = None
            if rollbacks >= c.rollback_thres:  # (E3) too many rollbacks: the barrier was too ambitious
                rollbacks = 0
                barrier = min(barrier * 2, best_loss - 1e-3) if best_loss < float("inf") else barrier * 2
            if step % c.check_every == 0 and scaling:
                if ce_val < barrier:
                    temp /= c.temp_factor
                else:
                    rollbacks += 1
                    total_rollbacks += 1
                    noise = torch.rand(L, V, generator=generator) * c.noise_ratio
                    temp = min(temp * c.temp_factor, c.max_temp)
            z = theta / temp
            w = torch.softmax(z + noise if noise is not None else z, dim=1)  # (E1)
            ce = F.cross_entropy(model.relaxed_logits(batch, w), tgt)
            loss = ce
            if model.reference is not None:  # (E2) the benign model must keep its labels
                ref = F.cross_entropy(model.relaxed_logits(batch, w, reference=True), batch.source)
                if bound0 is None:
                    bound0 = ref.detach()
                loss = ce + torch.clamp(ref - bound0, min=0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ce_val = float(ce.detach())
            if ce_val <= barrier:
                scaling = True
            with torch.no_grad():  # (E4) close to one-hot and under the barrier: keep it, tighten the barrier
                top, arg = w.detach().max(dim=1)
                if L - float(top.sum()) < c.eps_one_hot and ce_val <= barrier:
                    best_ids, best_loss = model.vocab_ids[arg].clone(), ce_val
                    barrier, rollbacks = best_loss / 2, 0
            if progress is not None:
                progress(step, ce_val, temp)
        final = best_ids if best_ids is not None else model.vocab_ids[theta.detach().argmax(dim=1)]
        inv = discrete_inversion(model, batch, target, final)
        inv.relaxed_loss = best_loss if best_ids is not None else None
        inv.steps, inv.queries, inv.rollbacks = c.steps, c.steps, total_rollbacks
        inv.seconds = time.perf_counter() - t0
        return inv
