"""Security side: textual backdoors and defences, prompt-template attacks, diffusion poisoning."""
