"""BiBadDiff: BadNets-like data poisoning of class-conditional diffusion models.

Pan et al., "From Trojan Horses to Castle Walls: Unveiling Bilateral Data Poisoning
Effects in Diffusion Models" (NeurIPS 2024). The attacker only touches the training data
(stamp a trigger on non-target images, relabel them to the target class); we train a
class-conditional DDPM with classifier-free guidance and measure the harm (misaligned
generations, trigger amplification) and the defensive signal (easier detection, robust
diffusion classifiers).

Modules: ``config`` (typed configs), ``poison`` (triggers and poisoned sets), ``model``
(UNet + CFG sampling), ``train`` (training loop with checkpoints), ``classifiers``
(clean CNN, trigger detector), ``amplify``, ``detect``, ``diffclassify``, ``demo``.
"""
