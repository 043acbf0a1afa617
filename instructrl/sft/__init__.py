"""Step 1: supervised fine-tuning on labeler demonstrations."""
