"""The LQAE network: ViT encoder -> exact quantization onto LM embeddings -> frozen LM -> ViT decoder.

With ``config.quantizer == "learned"`` the same class is the paper's VQ-VAE baseline: the codebook is
a trained table and the decoder reads the code vectors directly (the language model is not used).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import LQAEConfig
from .language_model import FrozenLanguageModel
from .quantizer import LanguageQuantizer, codebook_entropy, codebook_usage
from .vit import ImageDecoder, ImageEncoder


@dataclass
class LQAEOutput:
    """What one training forward returns.

    reconstruction ``[B, 3, H, W]`` (unclamped pixel scale); ids ``[B, N]`` int64; every loss
    term a scalar (``codebook_loss`` is zero unless the codebook is learned, ``entropy_loss`` unless
    ``codebook_entropy_weight`` > 0: both unweighted); ``codebook_usage`` the
    fraction of codebook rows used in the batch and ``perplexity`` the exponential entropy of the
    batch's id histogram.
    """

    reconstruction: torch.Tensor
    ids: torch.Tensor
    loss: torch.Tensor
    pixel_loss: torch.Tensor
    commitment_loss: torch.Tensor
    mlm_loss: torch.Tensor
    codebook_usage: torch.Tensor
    perplexity: torch.Tensor
    codebook_loss: torch.Tensor
    entropy_loss: torch.Tensor


def no_mask_token_message() -> str:
    return ("mask_ratio > 0 replaces masked positions by a mask token's embedding, and this language model's "
            "tokenizer has no mask token (a causal LM has none): set mask_token to one of its special tokens "
            "(e.g. mask_token='<|endoftext|>'), or mask_ratio=0")


def _dtype_of(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


class LQAEModel(nn.Module):
    """Encoder, quantizer, frozen language model and decoder.

    Args:
        config: the architecture and loss weights.
        language_model: the frozen LM (codebook = its word embeddings).
        allowed_ids: ``LongTensor[K]`` ids the quantizer may produce (no special tokens); for a
            learned codebook, ``arange(config.learned_codebook_size)``.
        mask_token_id: the id whose embedding replaces masked positions in training (the LM's ``<mask>``,
            or ``config.mask_token``'s); None when there is none (then ``mask_ratio`` must be 0).
        initialise: False leaves the encoder's and decoder's weights uninitialised, for a caller that
            loads every one of them next (``ImageTokenizer.from_pretrained``, strictly).
    """

    def __init__(self, config: LQAEConfig, language_model: FrozenLanguageModel,
                 allowed_ids: torch.Tensor, mask_token_id: int | None, *, initialise: bool = True) -> None:
        super().__init__()
        if config.tokens_per_image > language_model.max_tokens:
            raise ValueError(
                f"image_size={config.image_size} with patch_size={config.patch_size} gives "
                f"{config.tokens_per_image} tokens, more than the language model's limit of "
                f"{language_model.max_tokens}; raise patch_size or lower image_size"
            )
        if config.mask_ratio > 0 and mask_token_id is None:
            raise ValueError(no_mask_token_message())
        self.config = config
        width = language_model.hidden_size
        states = language_model.num_layers + 1  # embedding output + every layer
        if any(not -states <= i < states for i in config.decoder_layers):
            raise ValueError(f"decoder_layers {list(config.decoder_layers)} out of range: the language model has "
                             f"{states} hidden states (embedding output + {states - 1} layers)")
        # initialise=False (a checkpoint's weights are loaded next): the towers are built on the meta
        # device and given uninitialised storage, so no random initialisation is computed for nothing.
        with torch.device("meta") if not initialise else contextlib.nullcontext():
            self.encoder = ImageEncoder(config.image_size, config.patch_size, config.encoder_width,
                                        config.encoder_depth, config.encoder_heads, config.mlp_ratio,
                                        config.search_dim or width, config.vit_block)
            self.decoder = ImageDecoder(config.image_size, config.patch_size, config.decoder_width,
                                        config.decoder_depth, config.decoder_heads, config.mlp_ratio,
                                        width * len(config.decoder_layers), config.vit_block, skip=config.decoder_skip)
        if not initialise:
            self.encoder.to_empty(device="cpu")
            self.decoder.to_empty(device="cpu")
        projection = (width, config.search_dim) if config.search_dim else None
        self.quantizer = LanguageQuantizer(allowed_ids, config.metric, projection, center=config.codebook_centering)
        self.learned = config.quantizer == "learned"
        # The VQ-VAE baseline's own codebook, initialised as the official VQAE's: N(0, 1/width)
        # (flax variance_scaling(1, "fan_in", "normal") on a [K, width] table).
        self.codebook = nn.Embedding(config.learned_codebook_size, width) if self.learned else None
        if self.codebook is not None:
            nn.init.normal_(self.codebook.weight, std=width**-0.5)
        self.language_model = language_model
        self.mask_token_id = mask_token_id

    @property
    def mlm_enabled(self) -> bool:
        """Whether training adds the masked-LM term: asked for, and the LM has a trained head to give it."""
        return self.config.mlm_loss_weight > 0 and self.language_model.has_trained_head and not self.learned

    @property
    def mlm_term_dropped(self) -> bool:
        """Whether the config asks for a masked-LM term that this LM cannot give (no trained head):
        training reports it; inference does not care."""
        return self.config.mlm_loss_weight > 0 and not self.mlm_enabled and not self.learned

    # -- what is trained and saved ------------------------------------------------------------
    def trainable_modules(self) -> dict[str, nn.Module]:
        """The modules whose weights are trained and saved (never the language model)."""
        modules: dict[str, nn.Module] = {"encoder": self.encoder, "decoder": self.decoder}
        if self.quantizer.projection is not None:
            modules["quantizer"] = self.quantizer
        if self.codebook is not None:
            modules["codebook"] = self.codebook
        return modules

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{k}": v for name, m in self.trainable_modules().items() for k, v in m.state_dict().items()}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.trainable_modules().values() for p in m.parameters()]

    @property
    def codebook_size(self) -> int:
        return int(self.quantizer.allowed_ids.numel())

    @property
    def codebook_table(self) -> torch.Tensor:
        """``[V, H]`` the table ids index: the LM's word embeddings, or the learned codebook."""
        return self.codebook.weight if self.codebook is not None else self.language_model.word_embeddings

    # -- inference pieces -----------------------------------------------------------------------
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels ``[B, 3, H, W]`` in [0, 1] -> ids ``[B, N]``. Never runs the language model."""
        z = self.encoder(pixels.to(_dtype_of(self.encoder)))
        return self.quantizer.search(z, self.codebook_table)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids ``[B, N]`` -> raw codebook rows ``[B, N, H]``."""
        return F.embedding(ids, self.codebook_table)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """ids ``[B, N]`` -> pixels ``[B, 3, H, W]`` clamped to [0, 1], through the LM (no mask);
        a learned codebook's rows go to the decoder directly."""
        hidden = self.embed(ids) if self.learned else self.decoder_input(self.embed(ids))[0]
        return self.decoder(hidden.to(_dtype_of(self.decoder))).clamp(0.0, 1.0)

    def decoder_input(self, lm_inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LM input vectors ``[B, N, H]`` -> (what the decoder reads: the ``decoder_layers`` hidden
        states concatenated, ``[B, N, H * len(decoder_layers)]``; the last hidden state ``[B, N, H]``)."""
        layers = self.config.decoder_layers
        if layers == (-1,):
            last = self.language_model(lm_inputs)
            return last, last
        states = self.language_model.all_hidden_states(lm_inputs)
        return torch.cat([states[i] for i in layers], dim=-1), states[-1]

    def hidden_states(self, ids: torch.Tensor, layers: tuple[int, ...] | None = None) -> torch.Tensor:
        """ids ``[B, N]`` -> the LM's last hidden states ``[B, N, H]``, or the mean of ``layers``
        (indices into (embedding output, layer 1, ..., layer L); negative counts from the end).
        A learned codebook has no LM: its code vectors are the features and ``layers`` must be None."""
        if self.learned:
            if layers is not None:
                raise ValueError("layers= needs a language model; this tokenizer's codebook is learned "
                                 "(quantizer='learned'), its features are the code vectors")
            return self.embed(ids)
        if layers is None:
            return self.language_model(self.embed(ids))
        states = self.language_model.all_hidden_states(self.embed(ids))
        try:
            return torch.stack([states[i] for i in layers]).mean(0)
        except IndexError as err:
            raise ValueError(f"layers {list(layers)} out of range: the LM has {len(states)} hidden states "
                             f"(embeddings + {len(states) - 1} layers)") from err

    def probe_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels ``[B, 3, H, W]`` -> the official linear-probe representation ``[B, F]``: every
        encoder block's output and every LM hidden state (no masking), each mean-pooled over the
        tokens, concatenated. (The official code averages tokens 1..N-1, a habit from CLS-token
        models; these towers have no CLS token, so all N are averaged.)"""
        encoder_layers = self.encoder.layer_outputs(pixels.to(_dtype_of(self.encoder)))  # each [B, N, W]
        pooled = [h.float().mean(dim=1) for h in encoder_layers]
        if not self.learned:
            z = self.encoder.to_codebook(encoder_layers[-1])
            ids = self.quantizer.search(z, self.codebook_table)
            pooled += [h.float().mean(dim=1) for h in self.language_model.all_hidden_states(self.embed(ids))]
        return torch.cat(pooled, dim=1)

    # -- training forward -----------------------------------------------------------------------
    def forward(self, pixels: torch.Tensor, mask_ratio: float | None = None,
                generator: torch.Generator | None = None, mask: torch.Tensor | None = None) -> LQAEOutput:
        """Full training forward on pixels ``[B, 3, H, W]`` in [0, 1].

        ``mask_ratio`` defaults to the config's value in training mode and 0 in eval mode; tokens are
        masked at random with it (from ``generator``), unless ``mask`` (bool ``[B, N]``) says which.
        """
        if mask_ratio is None:
            mask_ratio = self.config.mask_ratio if self.training else 0.0
        embeddings = self.codebook_table
        z = self.encoder(pixels.to(_dtype_of(self.encoder)))  # [B, N, H]
        quantized = self.quantizer(z, embeddings)
        if self.learned:
            return self._vqvae_forward(pixels, quantized, mask)
        lm_inputs = quantized.quantized.to(embeddings.dtype)
        if mask is not None:
            masked = mask.to(device=pixels.device, dtype=torch.bool)
        elif mask_ratio > 0:
            masked = torch.rand(quantized.ids.shape, generator=generator, device=pixels.device) < mask_ratio
        else:
            masked = torch.zeros(quantized.ids.shape, dtype=torch.bool, device=pixels.device)
        if mask is not None or mask_ratio > 0:
            if self.mask_token_id is None:
                raise ValueError(no_mask_token_message())
            lm_inputs = torch.where(masked.unsqueeze(-1), embeddings[self.mask_token_id], lm_inputs)
        decoder_input, hidden = self.decoder_input(lm_inputs)  # [B, N, H * layers], [B, N, H]
        reconstruction = self.decoder(decoder_input.to(_dtype_of(self.decoder)))
        pixel_loss = F.mse_loss(reconstruction.float(), pixels.float())
        mlm_loss = self._mlm_loss(hidden, quantized.ids, masked)
        entropy = self._entropy_loss(z, embeddings, generator)
        c = self.config
        # The codebook loss is zero unless a search projection is trained.
        loss = (c.pixel_loss_weight * pixel_loss + c.commitment_weight * quantized.commitment_loss.float()
                + c.mlm_loss_weight * mlm_loss + c.codebook_entropy_weight * entropy
                + c.codebook_loss_weight * quantized.codebook_loss)
        usage, perplexity = codebook_usage(quantized.ids, self.codebook_size)
        return LQAEOutput(reconstruction, quantized.ids, loss, pixel_loss, quantized.commitment_loss.float(),
                          mlm_loss, usage, perplexity, quantized.codebook_loss, entropy)

    def _entropy_loss(self, z: torch.Tensor, embeddings: torch.Tensor,
                      generator: torch.Generator | None) -> torch.Tensor:
        """The codebook entropy term on a random sample of the batch's encoder vectors (0 when off)."""
        c = self.config
        # Without a gradient to the encoder (inference, or a frozen encoder) the term changes nothing.
        if c.codebook_entropy_weight == 0 or not z.requires_grad:
            return z.new_zeros((), dtype=torch.float32)
        flat = z.reshape(-1, z.shape[-1])  # [B*N, H]
        if flat.shape[0] > c.codebook_entropy_tokens:
            pick = torch.randperm(flat.shape[0], generator=generator, device=generator.device if generator else "cpu")
            flat = flat[pick[: c.codebook_entropy_tokens].to(flat.device)]
        # [K, H], what the search compares with (the centred rows with codebook_centering); never trained here
        rows = self.quantizer.searched_rows(embeddings.detach())[self.quantizer.allowed_ids]
        return codebook_entropy(flat, rows, c.codebook_entropy_temperature)

    def _vqvae_forward(self, pixels: torch.Tensor, quantized, mask: torch.Tensor | None) -> LQAEOutput:
        """The VQ-VAE baseline: decoder on the straight-through code vectors, loss = pixel MSE +
        codebook_loss_weight x codebook loss + commitment_weight x commitment loss (van den Oord et
        al., 2017; the official VQAE's weights are 2 and 0.5)."""
        if mask is not None and bool(mask.any()):
            raise ValueError("a learned codebook (VQ-VAE) has no language model to read masked tokens; "
                             "train it with mask_ratio=0")
        reconstruction = self.decoder(quantized.quantized.to(_dtype_of(self.decoder)))
        pixel_loss = F.mse_loss(reconstruction.float(), pixels.float())
        c = self.config
        commitment = quantized.commitment_loss.float()
        loss = (c.pixel_loss_weight * pixel_loss + c.codebook_loss_weight * quantized.codebook_loss
                + c.commitment_weight * commitment)
        usage, perplexity = codebook_usage(quantized.ids, self.codebook_size)
        zero = pixel_loss.new_zeros(())
        return LQAEOutput(reconstruction, quantized.ids, loss, pixel_loss, commitment, zero, usage, perplexity,
                          quantized.codebook_loss, zero)

    def _mlm_loss(self, hidden: torch.Tensor, ids: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the LM head at masked positions against the encoder's own ids."""
        if not self.mlm_enabled or not bool(masked.any()):
            return hidden.new_zeros((), dtype=torch.float32)
        logits = self.language_model.mlm_logits(hidden[masked])  # [M, V]
        return F.cross_entropy(logits.float(), ids[masked])
