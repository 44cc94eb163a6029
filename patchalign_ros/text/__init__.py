"""Text side: label cleaning, prompt ensembles, text encoders and the embedding cache."""
from .encoders import (DEFAULT_TEXT_ENCODER, OpenCLIPEncoder, PromptEmbedder, SentenceTransformerEncoder,
                       TextEncoder, TextEncoderError, check_dimensions, load_text_encoder)
from .prompts import clean_label, prompts_for, validate_queries

__all__ = ["DEFAULT_TEXT_ENCODER", "OpenCLIPEncoder", "PromptEmbedder", "SentenceTransformerEncoder",
           "TextEncoder", "TextEncoderError", "check_dimensions", "clean_label", "load_text_encoder",
           "prompts_for", "validate_queries"]
