"""netdam.capture: pcap capture of cluster traffic and the tools that read it back."""
