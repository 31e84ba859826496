"""Other Stable Diffusion tools: their files, recipes and noise."""
