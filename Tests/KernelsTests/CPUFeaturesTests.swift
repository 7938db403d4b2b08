import Testing
import CPUFeatures

/// The start-up check that refuses a CPU without the extensions the library targets are built for,
/// and the `/proc/cpuinfo` reading behind it and `--blas auto`.
@Suite struct CPUFeaturesTests {
    /// A Zen 3's flags (AVX2, no AVX-512), trimmed to the ones that matter and some that do not.
    static let zen3 = """
        processor\t: 0
        vendor_id\t: AuthenticAMD
        cpu family\t: 25
        model\t\t: 1
        model name\t: AMD EPYC 7B13
        flags\t\t: fpu sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand abm bmi1 avx2 bmi2 sha_ni
        processor\t: 1
        flags\t\t: fpu
        """

    @Test func fieldsAndFlagsComeFromTheFirstProcessor() {
        let info = CPUInfo(text: Self.zen3)
        #expect(info.field("model") == "1")
        #expect(info.field("model name") == "AMD EPYC 7B13")
        #expect(info.field("cpu family") == "25")
        #expect(info.field("stepping") == nil)
        #expect(info.flags?.contains("avx2") == true)
        #expect(info.flags?.contains("avx512f") == false)
        #expect(CPUInfo(text: "processor\t: 0\n").flags == nil)
    }

    @Test func aCPUWithAVX2AndFMAIsAccepted() {
        #expect(CPUFeatures.missingForLibraries(cpuinfo: CPUInfo(text: Self.zen3)).isEmpty)
        // Unreadable flags refuse nothing (the check is a courtesy, not a gate on other systems).
        #expect(CPUFeatures.missingForLibraries(cpuinfo: nil).isEmpty)
        #expect(CPUFeatures.missingForLibraries(cpuinfo: CPUInfo(text: "")).isEmpty)
        // This machine runs the tests, so it has them.
        #expect(CPUFeatures.missingForLibraries().isEmpty)
    }

    @Test func anOlderCPUIsRefusedNamingWhatItLacks() {
        // A Sandy Bridge: AVX, but neither AVX2, FMA, BMI nor MOVBE.
        let sandyBridge = CPUInfo(text: "flags\t\t: fpu sse2 ssse3 sse4_1 sse4_2 popcnt aes xsave avx\n")
        #if arch(x86_64)
        #expect(CPUFeatures.missingForLibraries(cpuinfo: sandyBridge) == ["avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm"])
        #else
        #expect(CPUFeatures.missingForLibraries(cpuinfo: sandyBridge).isEmpty)
        #endif
    }
}
