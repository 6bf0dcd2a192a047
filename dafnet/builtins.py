"""dafnet's own components: kind -> {registry name: "module:attr"}.

Adding a built-in component is one module plus one line here. Nothing is imported
until a recipe uses the name.
"""

BUILTINS: dict[str, dict[str, str]] = {
    "anatomy_encoder": {
        "unet_shared_decoder": "dafnet.components.anatomy:UNetSharedDecoderEncoder",
    },
    "modality_encoder": {
        "vae": "dafnet.components.modality:VAEModalityEncoder",
    },
    "segmentor": {
        "conv_head": "dafnet.components.segmentor:ConvHeadSegmentor",
    },
    "aligner": {
        "tps": "dafnet.components.aligners.tps:TPSAligner",
        "affine": "dafnet.components.aligners.affine:AffineAligner",
        "identity": "dafnet.components.aligners.identity:IdentityAligner",
    },
    "fuser": {
        "max": "dafnet.components.fusers:MaxFuser",
        "mean": "dafnet.components.fusers:MeanFuser",
    },
    "decoder": {
        "film": "dafnet.components.decoders.film:FiLMDecoder",
        "spade": "dafnet.components.decoders.spade:SPADEDecoder",
    },
    "discriminator": {
        "lsgan_conv": "dafnet.components.discriminator:LSGANConvDiscriminator",
    },
    "pairing_head": {
        "dice_mlp": "dafnet.components.pairing_head:DiceMLPPairingHead",
    },
    "loss": {
        "dice": "dafnet.losses:DiceLoss",
        "cross_entropy": "dafnet.losses:CrossEntropyLoss",
        "supervised": "dafnet.losses:SupervisedLoss",
        "kl": "dafnet.losses:KLDivergenceLoss",
        "l1": "dafnet.losses:L1ReconstructionLoss",
        "lsgan_generator": "dafnet.losses:LSGANGeneratorLoss",
        "lsgan_discriminator": "dafnet.losses:LSGANDiscriminatorLoss",
        "z_reconstruction": "dafnet.losses:ZReconstructionLoss",
    },
    "metric": {
        "dice": "dafnet.metrics.dice:DiceMetric",
        "hd95": "dafnet.metrics.hd95:HD95Metric",
        "alignment": "dafnet.metrics.alignment:AlignmentMetric",
        "dcor": "dafnet.metrics.dcor:DistanceCorrelationMetric",
        "probe": "dafnet.metrics.probe:ModalityProbeMetric",
        "traversal": "dafnet.metrics.traversal:LatentTraversalMetric",
        "figures": "dafnet.metrics.figures:FiguresMetric",
    },
    "data_source": {
        "phantom": "dafnet.data.phantom:PhantomDataSource",
        "nnunet": "dafnet.data.nnunet:NnUNetDataSource",
        "datalist": "dafnet.data.datalist:DatalistDataSource",
        "hf_datasets": "dafnet.data.hf:HFDatasetsDataSource",
    },
    "method": {
        "dafnet": "dafnet.methods.dafnet:DAFNet",
        "unet": "dafnet.methods.unet:UNet",
        "copy": "dafnet.methods.baselines:CopyBaseline",
        "register": "dafnet.methods.baselines:RegisterBaseline",
        "sdnet": "dafnet.methods.sdnet:SDNet",
    },
}
