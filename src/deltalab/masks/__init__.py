"""Weight-delta masks: magnitude, momentum, Fisher and random masks, and their overlap."""
