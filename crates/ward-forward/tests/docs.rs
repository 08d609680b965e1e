//! The configuration examples in docs/forwarding.md are valid `ward.yaml`.

#[test]
fn forwarding_doc_examples_parse() {
    let doc = include_str!("../../../docs/forwarding.md");
    let mut examples = 0;
    for block in doc.split("```yaml\n").skip(1) {
        let block = block.split("```").next().unwrap();
        if !block.starts_with("forward:") {
            continue;
        }
        let config = ward_core::Config::from_yaml(block, std::path::Path::new("/etc/ward"))
            .unwrap_or_else(|e| panic!("{e}\n{block}"));
        assert!(!config.forward.is_empty());
        examples += 1;
    }
    assert!(examples >= 5, "{examples} examples");
}

#[test]
fn configuration_reference_forward_entries_parse() {
    let doc = include_str!("../../../docs/configuration.md");
    let start = doc.find("\nforward:").expect("forward: in the reference") + 1;
    let block: String = doc[start..]
        .lines()
        .take_while(|l| !l.starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = ward_core::Config::from_yaml(&block, std::path::Path::new("/etc/ward"))
        .unwrap_or_else(|e| panic!("{e}\n{block}"));
    assert_eq!(config.forward.len(), 3);
}
