"""PromptAttack: malicious prompt templates against prompt-learning classifiers.

Victims (causal-LM next-token and masked-LM), templates/verbalizers, zero/few-shot/full
heads, attack strategies (gradient HotFlip/AutoPrompt, char, word, distractor, random) and
metrics. Import the pieces from their modules; this package import stays light.
"""
