"""Key -> shape layouts of the standard weight files, written out as literal data.

These are the published layouts of the files (torchvision / pytorch-fid / lpips naming),
NOT generated from flowmo's modules, so the tests compare the modules against an
independent specification.

BatchNorm layers are written as ``bn("name", C)``, a shorthand for the four tensors every
``torch.nn.BatchNorm2d`` stores: ``name.weight``, ``name.bias``, ``name.running_mean``,
``name.running_var`` (each of shape (C,)). ``num_batches_tracked`` counters are left out:
old checkpoints (e.g. ``resnet50-19c8e357.pth``) do not have them, newer ones do, and the
loader accepts both.
"""


def bn(name, c):
    return {f"{name}.weight": (c,), f"{name}.bias": (c,), f"{name}.running_mean": (c,), f"{name}.running_var": (c,)}


def merge(*parts):
    out = {}
    for p in parts:
        for k, v in p.items():
            assert k not in out, k
            out[k] = v
    return out


# ---------------------------------------------------------------- vgg16-397923af.pth
VGG16 = {
    "features.0.weight": (64, 3, 3, 3), "features.0.bias": (64,),
    "features.2.weight": (64, 64, 3, 3), "features.2.bias": (64,),
    "features.5.weight": (128, 64, 3, 3), "features.5.bias": (128,),
    "features.7.weight": (128, 128, 3, 3), "features.7.bias": (128,),
    "features.10.weight": (256, 128, 3, 3), "features.10.bias": (256,),
    "features.12.weight": (256, 256, 3, 3), "features.12.bias": (256,),
    "features.14.weight": (256, 256, 3, 3), "features.14.bias": (256,),
    "features.17.weight": (512, 256, 3, 3), "features.17.bias": (512,),
    "features.19.weight": (512, 512, 3, 3), "features.19.bias": (512,),
    "features.21.weight": (512, 512, 3, 3), "features.21.bias": (512,),
    "features.24.weight": (512, 512, 3, 3), "features.24.bias": (512,),
    "features.26.weight": (512, 512, 3, 3), "features.26.bias": (512,),
    "features.28.weight": (512, 512, 3, 3), "features.28.bias": (512,),
    "classifier.0.weight": (4096, 25088), "classifier.0.bias": (4096,),
    "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}

# ------------------------------------------------------------ alexnet-owt-7be5be79.pth
ALEXNET = {
    "features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
    "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}

# ------------------------------------------------------- lpips weights/v0.1/{vgg,alex}.pth
LPIPS_VGG_HEADS = {
    "lin0.model.1.weight": (1, 64, 1, 1),
    "lin1.model.1.weight": (1, 128, 1, 1),
    "lin2.model.1.weight": (1, 256, 1, 1),
    "lin3.model.1.weight": (1, 512, 1, 1),
    "lin4.model.1.weight": (1, 512, 1, 1),
}
LPIPS_ALEX_HEADS = {
    "lin0.model.1.weight": (1, 64, 1, 1),
    "lin1.model.1.weight": (1, 192, 1, 1),
    "lin2.model.1.weight": (1, 384, 1, 1),
    "lin3.model.1.weight": (1, 256, 1, 1),
    "lin4.model.1.weight": (1, 256, 1, 1),
}

# ---------------------------------------------- resnet50-0676ba61.pth (and 11ad3fa6, 19c8e357)
RESNET50 = merge(
    {"conv1.weight": (64, 3, 7, 7)}, bn("bn1", 64),
    # layer1: in 64, width 64, out 256
    {"layer1.0.conv1.weight": (64, 64, 1, 1)}, bn("layer1.0.bn1", 64),
    {"layer1.0.conv2.weight": (64, 64, 3, 3)}, bn("layer1.0.bn2", 64),
    {"layer1.0.conv3.weight": (256, 64, 1, 1)}, bn("layer1.0.bn3", 256),
    {"layer1.0.downsample.0.weight": (256, 64, 1, 1)}, bn("layer1.0.downsample.1", 256),
    {"layer1.1.conv1.weight": (64, 256, 1, 1)}, bn("layer1.1.bn1", 64),
    {"layer1.1.conv2.weight": (64, 64, 3, 3)}, bn("layer1.1.bn2", 64),
    {"layer1.1.conv3.weight": (256, 64, 1, 1)}, bn("layer1.1.bn3", 256),
    {"layer1.2.conv1.weight": (64, 256, 1, 1)}, bn("layer1.2.bn1", 64),
    {"layer1.2.conv2.weight": (64, 64, 3, 3)}, bn("layer1.2.bn2", 64),
    {"layer1.2.conv3.weight": (256, 64, 1, 1)}, bn("layer1.2.bn3", 256),
    # layer2: in 256, width 128, out 512
    {"layer2.0.conv1.weight": (128, 256, 1, 1)}, bn("layer2.0.bn1", 128),
    {"layer2.0.conv2.weight": (128, 128, 3, 3)}, bn("layer2.0.bn2", 128),
    {"layer2.0.conv3.weight": (512, 128, 1, 1)}, bn("layer2.0.bn3", 512),
    {"layer2.0.downsample.0.weight": (512, 256, 1, 1)}, bn("layer2.0.downsample.1", 512),
    {"layer2.1.conv1.weight": (128, 512, 1, 1)}, bn("layer2.1.bn1", 128),
    {"layer2.1.conv2.weight": (128, 128, 3, 3)}, bn("layer2.1.bn2", 128),
    {"layer2.1.conv3.weight": (512, 128, 1, 1)}, bn("layer2.1.bn3", 512),
    {"layer2.2.conv1.weight": (128, 512, 1, 1)}, bn("layer2.2.bn1", 128),
    {"layer2.2.conv2.weight": (128, 128, 3, 3)}, bn("layer2.2.bn2", 128),
    {"layer2.2.conv3.weight": (512, 128, 1, 1)}, bn("layer2.2.bn3", 512),
    {"layer2.3.conv1.weight": (128, 512, 1, 1)}, bn("layer2.3.bn1", 128),
    {"layer2.3.conv2.weight": (128, 128, 3, 3)}, bn("layer2.3.bn2", 128),
    {"layer2.3.conv3.weight": (512, 128, 1, 1)}, bn("layer2.3.bn3", 512),
    # layer3: in 512, width 256, out 1024
    {"layer3.0.conv1.weight": (256, 512, 1, 1)}, bn("layer3.0.bn1", 256),
    {"layer3.0.conv2.weight": (256, 256, 3, 3)}, bn("layer3.0.bn2", 256),
    {"layer3.0.conv3.weight": (1024, 256, 1, 1)}, bn("layer3.0.bn3", 1024),
    {"layer3.0.downsample.0.weight": (1024, 512, 1, 1)}, bn("layer3.0.downsample.1", 1024),
    {"layer3.1.conv1.weight": (256, 1024, 1, 1)}, bn("layer3.1.bn1", 256),
    {"layer3.1.conv2.weight": (256, 256, 3, 3)}, bn("layer3.1.bn2", 256),
    {"layer3.1.conv3.weight": (1024, 256, 1, 1)}, bn("layer3.1.bn3", 1024),
    {"layer3.2.conv1.weight": (256, 1024, 1, 1)}, bn("layer3.2.bn1", 256),
    {"layer3.2.conv2.weight": (256, 256, 3, 3)}, bn("layer3.2.bn2", 256),
    {"layer3.2.conv3.weight": (1024, 256, 1, 1)}, bn("layer3.2.bn3", 1024),
    {"layer3.3.conv1.weight": (256, 1024, 1, 1)}, bn("layer3.3.bn1", 256),
    {"layer3.3.conv2.weight": (256, 256, 3, 3)}, bn("layer3.3.bn2", 256),
    {"layer3.3.conv3.weight": (1024, 256, 1, 1)}, bn("layer3.3.bn3", 1024),
    {"layer3.4.conv1.weight": (256, 1024, 1, 1)}, bn("layer3.4.bn1", 256),
    {"layer3.4.conv2.weight": (256, 256, 3, 3)}, bn("layer3.4.bn2", 256),
    {"layer3.4.conv3.weight": (1024, 256, 1, 1)}, bn("layer3.4.bn3", 1024),
    {"layer3.5.conv1.weight": (256, 1024, 1, 1)}, bn("layer3.5.bn1", 256),
    {"layer3.5.conv2.weight": (256, 256, 3, 3)}, bn("layer3.5.bn2", 256),
    {"layer3.5.conv3.weight": (1024, 256, 1, 1)}, bn("layer3.5.bn3", 1024),
    # layer4: in 1024, width 512, out 2048
    {"layer4.0.conv1.weight": (512, 1024, 1, 1)}, bn("layer4.0.bn1", 512),
    {"layer4.0.conv2.weight": (512, 512, 3, 3)}, bn("layer4.0.bn2", 512),
    {"layer4.0.conv3.weight": (2048, 512, 1, 1)}, bn("layer4.0.bn3", 2048),
    {"layer4.0.downsample.0.weight": (2048, 1024, 1, 1)}, bn("layer4.0.downsample.1", 2048),
    {"layer4.1.conv1.weight": (512, 2048, 1, 1)}, bn("layer4.1.bn1", 512),
    {"layer4.1.conv2.weight": (512, 512, 3, 3)}, bn("layer4.1.bn2", 512),
    {"layer4.1.conv3.weight": (2048, 512, 1, 1)}, bn("layer4.1.bn3", 2048),
    {"layer4.2.conv1.weight": (512, 2048, 1, 1)}, bn("layer4.2.bn1", 512),
    {"layer4.2.conv2.weight": (512, 512, 3, 3)}, bn("layer4.2.bn2", 512),
    {"layer4.2.conv3.weight": (2048, 512, 1, 1)}, bn("layer4.2.bn3", 2048),
    {"fc.weight": (1000, 2048), "fc.bias": (1000,)},
)


# ------------------------------------------------- pt_inception-2015-12-05-6726825d.pth
def bc(name, c_out, c_in, kh, kw):
    """A BasicConv2d: ``name.conv.weight`` (no bias) plus BatchNorm ``name.bn``."""
    return merge({f"{name}.conv.weight": (c_out, c_in, kh, kw)}, bn(f"{name}.bn", c_out))


INCEPTION_FID = merge(
    bc("Conv2d_1a_3x3", 32, 3, 3, 3),
    bc("Conv2d_2a_3x3", 32, 32, 3, 3),
    bc("Conv2d_2b_3x3", 64, 32, 3, 3),
    bc("Conv2d_3b_1x1", 80, 64, 1, 1),
    bc("Conv2d_4a_3x3", 192, 80, 3, 3),
    # Mixed_5b: InceptionA(192, pool_features=32)
    bc("Mixed_5b.branch1x1", 64, 192, 1, 1),
    bc("Mixed_5b.branch5x5_1", 48, 192, 1, 1),
    bc("Mixed_5b.branch5x5_2", 64, 48, 5, 5),
    bc("Mixed_5b.branch3x3dbl_1", 64, 192, 1, 1),
    bc("Mixed_5b.branch3x3dbl_2", 96, 64, 3, 3),
    bc("Mixed_5b.branch3x3dbl_3", 96, 96, 3, 3),
    bc("Mixed_5b.branch_pool", 32, 192, 1, 1),
    # Mixed_5c: InceptionA(256, pool_features=64)
    bc("Mixed_5c.branch1x1", 64, 256, 1, 1),
    bc("Mixed_5c.branch5x5_1", 48, 256, 1, 1),
    bc("Mixed_5c.branch5x5_2", 64, 48, 5, 5),
    bc("Mixed_5c.branch3x3dbl_1", 64, 256, 1, 1),
    bc("Mixed_5c.branch3x3dbl_2", 96, 64, 3, 3),
    bc("Mixed_5c.branch3x3dbl_3", 96, 96, 3, 3),
    bc("Mixed_5c.branch_pool", 64, 256, 1, 1),
    # Mixed_5d: InceptionA(288, pool_features=64)
    bc("Mixed_5d.branch1x1", 64, 288, 1, 1),
    bc("Mixed_5d.branch5x5_1", 48, 288, 1, 1),
    bc("Mixed_5d.branch5x5_2", 64, 48, 5, 5),
    bc("Mixed_5d.branch3x3dbl_1", 64, 288, 1, 1),
    bc("Mixed_5d.branch3x3dbl_2", 96, 64, 3, 3),
    bc("Mixed_5d.branch3x3dbl_3", 96, 96, 3, 3),
    bc("Mixed_5d.branch_pool", 64, 288, 1, 1),
    # Mixed_6a: InceptionB(288)
    bc("Mixed_6a.branch3x3", 384, 288, 3, 3),
    bc("Mixed_6a.branch3x3dbl_1", 64, 288, 1, 1),
    bc("Mixed_6a.branch3x3dbl_2", 96, 64, 3, 3),
    bc("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3),
    # Mixed_6b: InceptionC(768, channels_7x7=128)
    bc("Mixed_6b.branch1x1", 192, 768, 1, 1),
    bc("Mixed_6b.branch7x7_1", 128, 768, 1, 1),
    bc("Mixed_6b.branch7x7_2", 128, 128, 1, 7),
    bc("Mixed_6b.branch7x7_3", 192, 128, 7, 1),
    bc("Mixed_6b.branch7x7dbl_1", 128, 768, 1, 1),
    bc("Mixed_6b.branch7x7dbl_2", 128, 128, 7, 1),
    bc("Mixed_6b.branch7x7dbl_3", 128, 128, 1, 7),
    bc("Mixed_6b.branch7x7dbl_4", 128, 128, 7, 1),
    bc("Mixed_6b.branch7x7dbl_5", 192, 128, 1, 7),
    bc("Mixed_6b.branch_pool", 192, 768, 1, 1),
    # Mixed_6c: InceptionC(768, channels_7x7=160)
    bc("Mixed_6c.branch1x1", 192, 768, 1, 1),
    bc("Mixed_6c.branch7x7_1", 160, 768, 1, 1),
    bc("Mixed_6c.branch7x7_2", 160, 160, 1, 7),
    bc("Mixed_6c.branch7x7_3", 192, 160, 7, 1),
    bc("Mixed_6c.branch7x7dbl_1", 160, 768, 1, 1),
    bc("Mixed_6c.branch7x7dbl_2", 160, 160, 7, 1),
    bc("Mixed_6c.branch7x7dbl_3", 160, 160, 1, 7),
    bc("Mixed_6c.branch7x7dbl_4", 160, 160, 7, 1),
    bc("Mixed_6c.branch7x7dbl_5", 192, 160, 1, 7),
    bc("Mixed_6c.branch_pool", 192, 768, 1, 1),
    # Mixed_6d: InceptionC(768, channels_7x7=160)
    bc("Mixed_6d.branch1x1", 192, 768, 1, 1),
    bc("Mixed_6d.branch7x7_1", 160, 768, 1, 1),
    bc("Mixed_6d.branch7x7_2", 160, 160, 1, 7),
    bc("Mixed_6d.branch7x7_3", 192, 160, 7, 1),
    bc("Mixed_6d.branch7x7dbl_1", 160, 768, 1, 1),
    bc("Mixed_6d.branch7x7dbl_2", 160, 160, 7, 1),
    bc("Mixed_6d.branch7x7dbl_3", 160, 160, 1, 7),
    bc("Mixed_6d.branch7x7dbl_4", 160, 160, 7, 1),
    bc("Mixed_6d.branch7x7dbl_5", 192, 160, 1, 7),
    bc("Mixed_6d.branch_pool", 192, 768, 1, 1),
    # Mixed_6e: InceptionC(768, channels_7x7=192)
    bc("Mixed_6e.branch1x1", 192, 768, 1, 1),
    bc("Mixed_6e.branch7x7_1", 192, 768, 1, 1),
    bc("Mixed_6e.branch7x7_2", 192, 192, 1, 7),
    bc("Mixed_6e.branch7x7_3", 192, 192, 7, 1),
    bc("Mixed_6e.branch7x7dbl_1", 192, 768, 1, 1),
    bc("Mixed_6e.branch7x7dbl_2", 192, 192, 7, 1),
    bc("Mixed_6e.branch7x7dbl_3", 192, 192, 1, 7),
    bc("Mixed_6e.branch7x7dbl_4", 192, 192, 7, 1),
    bc("Mixed_6e.branch7x7dbl_5", 192, 192, 1, 7),
    bc("Mixed_6e.branch_pool", 192, 768, 1, 1),
    # Mixed_7a: InceptionD(768)
    bc("Mixed_7a.branch3x3_1", 192, 768, 1, 1),
    bc("Mixed_7a.branch3x3_2", 320, 192, 3, 3),
    bc("Mixed_7a.branch7x7x3_1", 192, 768, 1, 1),
    bc("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
    bc("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1),
    bc("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3),
    # Mixed_7b: FID InceptionE_1(1280)
    bc("Mixed_7b.branch1x1", 320, 1280, 1, 1),
    bc("Mixed_7b.branch3x3_1", 384, 1280, 1, 1),
    bc("Mixed_7b.branch3x3_2a", 384, 384, 1, 3),
    bc("Mixed_7b.branch3x3_2b", 384, 384, 3, 1),
    bc("Mixed_7b.branch3x3dbl_1", 448, 1280, 1, 1),
    bc("Mixed_7b.branch3x3dbl_2", 384, 448, 3, 3),
    bc("Mixed_7b.branch3x3dbl_3a", 384, 384, 1, 3),
    bc("Mixed_7b.branch3x3dbl_3b", 384, 384, 3, 1),
    bc("Mixed_7b.branch_pool", 192, 1280, 1, 1),
    # Mixed_7c: FID InceptionE_2(2048)
    bc("Mixed_7c.branch1x1", 320, 2048, 1, 1),
    bc("Mixed_7c.branch3x3_1", 384, 2048, 1, 1),
    bc("Mixed_7c.branch3x3_2a", 384, 384, 1, 3),
    bc("Mixed_7c.branch3x3_2b", 384, 384, 3, 1),
    bc("Mixed_7c.branch3x3dbl_1", 448, 2048, 1, 1),
    bc("Mixed_7c.branch3x3dbl_2", 384, 448, 3, 3),
    bc("Mixed_7c.branch3x3dbl_3a", 384, 384, 1, 3),
    bc("Mixed_7c.branch3x3dbl_3b", 384, 384, 3, 1),
    bc("Mixed_7c.branch_pool", 192, 2048, 1, 1),
    {"fc.weight": (1008, 2048), "fc.bias": (1008,)},
)

# sanity numbers of the published files (parameter tensors + buffers, without counters)
EXPECTED_COUNTS = {
    "VGG16": 32,
    "ALEXNET": 16,
    "RESNET50": 1 + 52 + 53 * 4 + 2,  # conv1 + 52 block convs, 53 BNs, fc
    "INCEPTION_FID": 94 * 5 + 2,  # 94 BasicConv2d (conv + 4 BN tensors), fc
}
# ResNet-50 has 25,557,032 parameters (torchvision docs)
RESNET50_NUM_PARAMS = 25_557_032

# total parameter counts of the ImageNet classifiers (torchvision model docs)
VGG16_NUM_PARAMS = 138_357_544
ALEXNET_NUM_PARAMS = 61_100_840
